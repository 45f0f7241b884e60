"""specs/gpt_mini.yaml against its hand-written nanoGPT twin (tests/twins_gpt.py)."""

from __future__ import annotations

import pytest
import torch
from twins_gpt import GPT, GPTConfig, copy_from_graph, weight_map

import graphc

SMALL = {"layers": 2, "d": 32, "heads": 2, "ctx": 16}


def _build(overrides: dict[str, int]) -> torch.nn.Module:
    return graphc.build(graphc.check("specs/gpt_mini.yaml", overrides), seed=0).eval()


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, GPT]:
    gm = _build(SMALL)
    cfg = GPTConfig(**SMALL)
    twin = GPT(cfg).eval()
    copy_from_graph(twin, gm.state_dict(), cfg)
    return gm, twin


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())  # parameters() lists a tied weight once


def test_same_parameter_count_at_default_size() -> None:
    gm, twin = _build({}), GPT(GPTConfig())
    assert _count(gm) == _count(twin) == 834_304
    assert graphc.summary("specs/gpt_mini.yaml").total_params == _count(twin)


def test_weight_map_covers_every_parameter(pair: tuple[torch.nn.Module, GPT]) -> None:
    gm, _ = pair
    mapped = set(weight_map(GPTConfig(**SMALL)).values())
    assert mapped == set(gm.state_dict()) - {"head.weight"}
    assert gm.get_submodule("head").weight is gm.get_submodule("tok").weight


def test_identical_outputs(pair: tuple[torch.nn.Module, GPT]) -> None:
    gm, twin = pair
    tokens = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, ref = gm(tokens), twin(tokens)
    assert ours.shape == (3, 16, 256)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_shorter_sequences_work(pair: tuple[torch.nn.Module, GPT]) -> None:
    gm, twin = pair
    tokens = torch.randint(0, 256, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(gm(tokens), twin(tokens), atol=1e-5, rtol=0)


def test_causal(pair: tuple[torch.nn.Module, GPT]) -> None:
    gm, _ = pair
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 256
    with torch.no_grad():
        a, b = gm(tokens), gm(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9], atol=0, rtol=0)
    assert (a[:, 9:] - b[:, 9:]).abs().amax() > 1e-4


def test_gpt2_init_scales_the_residual_projection() -> None:
    gm = _build({"layers": 8, "d": 64, "heads": 2, "ctx": 16})
    std = gm.get_submodule("body.0.proj").weight.std().item()
    assert std == pytest.approx(0.02 / 4, rel=0.1)  # 1 / sqrt(2 * 8) = 1/4
    assert gm.get_submodule("body.0.fc").weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert gm.get_submodule("body.0.fc").bias.abs().max().item() == 0


def test_loads_hf_gpt2_weights() -> None:
    """The documented mapping (docs/attention.md): HF GPT-2 -> gpt_mini gives the same logits."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    gm = _build(SMALL)
    sd = hf.state_dict()
    names = {"ln_1": "ln1", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj", "ln_2": "ln2", "mlp.c_fc": "fc", "mlp.c_proj": "proj"}
    ours = {"tok.weight": sd["transformer.wte.weight"], "pos.weight": sd["transformer.wpe.weight"],
            "lnf.weight": sd["transformer.ln_f.weight"], "lnf.bias": sd["transformer.ln_f.bias"]}
    for i in range(SMALL["layers"]):
        for theirs, mine in names.items():
            w = sd[f"transformer.h.{i}.{theirs}.weight"]
            ours[f"body.{i}.{mine}.weight"] = w if mine.startswith("ln") else w.t()  # Conv1D = transposed Linear
            ours[f"body.{i}.{mine}.bias"] = sd[f"transformer.h.{i}.{theirs}.bias"]
    missing, unexpected = gm.load_state_dict(ours, strict=False)
    assert missing == ["head.weight"] and not unexpected  # head is tied to tok
    tokens = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(gm(tokens), hf(tokens).logits, atol=1e-4, rtol=0)
