"""The spec zoo: parameter counts equal the reference implementations', and GPT-2 and BERT
compute exactly what HF transformers computes once its weights are copied in.

The references are built from configs with random initialization (no download).  The weight
name mapping used here is the one documented in docs/zoo.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import graphc

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

# Parameter counts of the reference implementations (torchvision / HF transformers defaults).
REFERENCE_PARAMS = {
    "resnet18": 11_689_512,  # torchvision.models.resnet18()
    "resnet50": 25_557_032,  # torchvision.models.resnet50()
    "mobilenet_v2": 3_504_872,  # torchvision.models.mobilenet_v2()
    "vit_b_16": 86_567_656,  # torchvision.models.vit_b_16()
    "gpt2": 124_439_808,  # transformers.GPT2LMHeadModel(GPT2Config())
    "bert": 109_482_240,  # transformers.BertModel(BertConfig())
}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_total_params_match_reference(name: str) -> None:
    summary = graphc.summary(SPECS / f"{name}.yaml")
    assert summary.total_params == REFERENCE_PARAMS[name]


def _gpt2_state(hf: torch.nn.Module, layers: int) -> dict[str, torch.Tensor]:
    """HF GPT-2 weights under graphc's names (Conv1D weights are transposed Linear ones)."""
    sd = hf.state_dict()
    out = {
        "tok.weight": sd["transformer.wte.weight"],
        "pos.weight": sd["transformer.wpe.weight"],
        "lnf.weight": sd["transformer.ln_f.weight"],
        "lnf.bias": sd["transformer.ln_f.bias"],
    }
    conv1d = {"attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "fc": "mlp.c_fc", "proj": "mlp.c_proj"}
    for i in range(layers):
        h = f"transformer.h.{i}."
        for ours, theirs in {"ln1": "ln_1", "ln2": "ln_2"}.items():
            out[f"body.{i}.{ours}.weight"] = sd[h + theirs + ".weight"]
            out[f"body.{i}.{ours}.bias"] = sd[h + theirs + ".bias"]
        for ours, theirs in conv1d.items():
            out[f"body.{i}.{ours}.weight"] = sd[h + theirs + ".weight"].t()
            out[f"body.{i}.{ours}.bias"] = sd[h + theirs + ".bias"]
    out["head.weight"] = sd["lm_head.weight"]
    return out


def test_gpt2_equals_hf_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    layers, d, heads, vocab, ctx = 2, 64, 4, 512, 64
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=layers, n_embd=d, n_head=heads, vocab_size=vocab, n_positions=ctx)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    spec = graphc.load_spec(SPECS / "gpt2.yaml", {"layers": layers, "d": d, "heads": heads, "vocab": vocab, "ctx": ctx, "inputs.tokens.example.T": 16})
    gm = graphc.build(spec, seed=0).eval()
    assert sum(p.numel() for p in gm.parameters()) == sum(p.numel() for p in hf.parameters())
    missing, unexpected = gm.load_state_dict(_gpt2_state(hf, layers), strict=True)
    assert not missing and not unexpected
    assert gm.head.weight is gm.tok.weight, "the LM head stays tied to the token embedding"
    tokens = torch.randint(0, vocab, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = gm(tokens)
        theirs = hf(tokens).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def _bert_state(hf: torch.nn.Module, layers: int) -> dict[str, torch.Tensor]:
    """HF BERT weights under graphc's names (separate q/k/v projections map one to one)."""
    sd = hf.state_dict()
    e = "embeddings."
    out = {
        "word.weight": sd[e + "word_embeddings.weight"],
        "pos.weight": sd[e + "position_embeddings.weight"],
        "token_type.weight": sd[e + "token_type_embeddings.weight"],
        "emb_ln.weight": sd[e + "LayerNorm.weight"],
        "emb_ln.bias": sd[e + "LayerNorm.bias"],
        "pool.weight": sd["pooler.dense.weight"],
        "pool.bias": sd["pooler.dense.bias"],
    }
    names = {
        "attn.q": "attention.self.query",
        "attn.k": "attention.self.key",
        "attn.v": "attention.self.value",
        "attn.proj": "attention.output.dense",
        "ln1": "attention.output.LayerNorm",
        "fc": "intermediate.dense",
        "proj": "output.dense",
        "ln2": "output.LayerNorm",
    }
    for i in range(layers):
        for ours, theirs in names.items():
            for leaf in ("weight", "bias"):
                out[f"body.{i}.{ours}.{leaf}"] = sd[f"encoder.layer.{i}.{theirs}.{leaf}"]
    return out


def test_bert_equals_hf_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    layers, d, heads, ff, vocab, ctx = 2, 64, 4, 128, 512, 64
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ff,
        vocab_size=vocab, max_position_embeddings=ctx,
    )
    hf = transformers.BertModel(cfg).eval()
    overrides = {"layers": layers, "d": d, "heads": heads, "ff": ff, "vocab": vocab, "ctx": ctx, "inputs.input_ids.example.T": 16}
    gm = graphc.build(graphc.load_spec(SPECS / "bert.yaml", overrides), seed=0).eval()
    assert sum(p.numel() for p in gm.parameters()) == sum(p.numel() for p in hf.parameters())
    gm.load_state_dict(_bert_state(hf, layers), strict=True)
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, vocab, (3, 11), generator=gen)
    types = torch.randint(0, 2, (3, 11), generator=gen)
    attention_mask = torch.ones(3, 11, dtype=torch.long)
    attention_mask[1, 7:] = 0  # padding at the end of the second sequence
    with torch.no_grad():
        ours = gm(ids, types, attention_mask == 0)
        theirs = hf(input_ids=ids, token_type_ids=types, attention_mask=attention_mask)
    torch.testing.assert_close(ours["last_hidden_state"], theirs.last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours["pooler_output"], theirs.pooler_output, atol=1e-4, rtol=1e-4)


def test_zoo_doc_is_in_sync() -> None:
    """docs/zoo.md is generated from `graphc summary --json`; regenerate it when specs change."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_zoo_docs.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
