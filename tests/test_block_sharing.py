"""Block calls with ``shares``: one module runs on several inputs (Siamese towers).

The sharing call keeps its own nodes (their types are inferred, the summary lists them with
their FLOPs) but owns no parameters: lowering calls the owner's submodule, so ``state_dict``
and the ONNX initializers hold one copy under the owner's names, and gradients from both
uses meet in it.  The mistakes are golden files in tests/invalid/share_*.yaml.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import run_cli
from hostile import assert_clean, run_guarded

import graphc
from graphc.errors import LowerError
from graphc.weights.planner import expected_tensors

ROOT = Path(__file__).resolve().parent.parent
SIAMESE = ROOT / "specs" / "siamese.yaml"
TOWER_PARAMS = 16 * 9 + 2 * 16 + 32 * 16 * 9 + 32 + 32 * 32 + 32  # conv1 (no bias), bn1, conv2, fc
HEAD_PARAMS = 32 + 1


def _images(seed: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.rand(n, 1, 8, 8, generator=g)


def _write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_siamese_tower_is_counted_and_stored_once() -> None:
    summary = graphc.summary(SIAMESE)
    assert summary.total_params == TOWER_PARAMS + HEAD_PARAMS
    rows = {r.name: r for r in summary.nodes}
    assert rows["right.conv2"].params == 0 and rows["left.conv2"].params == 32 * 16 * 9 + 32
    assert rows["right.conv2"].flops == rows["left.conv2"].flops > 0  # computed twice, stored once
    built = graphc.lower_spec(SIAMESE, seed=0)
    gm = built.module
    keys = list(gm.state_dict())
    assert keys and not any(k.startswith("right.") for k in keys)
    assert sum(p.numel() for p in gm.parameters()) == summary.total_params
    assert set(expected_tensors(built.graph)) == set(keys)  # the torch-free weight plan agrees
    assert "right = self.left(image_b)" in gm.code


def test_siamese_equals_two_towers_with_copied_weights(tmp_path: Path) -> None:
    """The shared build computes what two separate towers compute when both hold left's weights."""
    shared = graphc.lower_spec(SIAMESE, seed=0).module.eval()
    text = SIAMESE.read_text().replace(", shares: left", "")
    assert text != SIAMESE.read_text()
    separate = graphc.lower_spec(_write(tmp_path, text), seed=1).module.eval()
    sd = shared.state_dict()
    sd.update({"right" + k[len("left"):]: v for k, v in sd.items() if k.startswith("left.")})
    separate.load_state_dict(sd)
    a, b = _images(0)
    with torch.no_grad():
        got, want = shared(a, b), separate(a, b)
    for name in ("score", "emb_a", "emb_b"):
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
    assert not torch.equal(got["emb_a"], got["emb_b"])


def test_gradients_from_the_second_use_reach_the_shared_weights() -> None:
    gm = graphc.lower_spec(SIAMESE, seed=0).module.train()
    a, b = _images(1)
    gm(a, b)["emb_b"].pow(2).sum().backward()
    w = gm.get_submodule("left.conv1").weight
    assert w.grad is not None and w.grad.abs().sum() > 0
    # both uses add up: d(f(a) + f(b)) = d f(a) + d f(b) on the one weight
    gm.eval()
    grads = []
    for out in (("emb_a",), ("emb_b",), ("emb_a", "emb_b")):
        gm.zero_grad()
        res = gm(a, b)
        sum(res[o].sum() for o in out).backward()
        grads.append(w.grad.clone())
    torch.testing.assert_close(grads[0] + grads[1], grads[2])


def test_siamese_trains_a_few_steps() -> None:
    """Pairs of the same image should score high, pairs of different ones low."""
    gm = graphc.lower_spec(SIAMESE, seed=0).module.train()
    opt = torch.optim.Adam(gm.parameters(), lr=0.01)
    a, b = _images(2, n=16)
    left = torch.cat([a, a])
    right = torch.cat([a, b])
    target = torch.cat([torch.ones(16, 1), torch.zeros(16, 1)])
    before = {k: v.clone() for k, v in gm.state_dict().items()}
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(gm(left, right)["score"], target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    after = gm.state_dict()
    assert not torch.equal(before["left.conv1.weight"], after["left.conv1.weight"])
    assert after["left.bn1.num_batches_tracked"].item() == 2 * 30  # both uses run the one BN


def test_siamese_exports_one_tower_and_verifies(tmp_path: Path) -> None:
    out = tmp_path / "siamese.onnx"
    result = graphc.export_onnx(SIAMESE, out)
    assert result.verify is not None and result.verify.passed
    model = onnx.load(str(out))
    names = [i.name for i in model.graph.initializer]
    assert "left.conv2.weight" in names and not any(n.startswith("right.") for n in names)
    values = dict(p for p in ((m.key, m.value) for m in model.metadata_props) if p[0] == "graphc.values")
    assert "right.fc" in values["graphc.values"]  # the sharing call's nodes stay probe-able
    gm = graphc.lower_spec(SIAMESE, seed=0).module.eval()
    a, b = _images(3, n=5)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image_a": a.numpy(), "image_b": b.numpy()}), strict=True))
    with torch.no_grad():
        want = gm(a, b)
    for name in ("score", "emb_a", "emb_b"):
        np.testing.assert_allclose(got[name], want[name].numpy(), rtol=1e-4, atol=1e-5)


def test_graph_draws_the_sharing_call_as_sharing(tmp_path: Path) -> None:
    out = tmp_path / "g.mmd"
    r = run_cli("graph", str(SIAMESE), "-o", str(out))
    assert r.code == 0, r.err
    text = out.read_text()
    assert '"right (tower, shares left)"' in text and '"left (tower)"' in text


def test_cli_export_then_verify_the_shared_model(tmp_path: Path) -> None:
    out = tmp_path / "s.onnx"
    r = run_cli("export", str(SIAMESE), "-o", str(out))
    assert r.code == 0, r.err
    r = run_cli("verify", str(out), "--spec", str(SIAMESE), "--json")
    assert r.code == 0, r.err
    assert '"passed": true' in r.out


MLP = """\
graphc: 1
name: shared
inputs:
  x: {shape: [B, 8]}
  y: {shape: [B, 8]}
blocks:
  mlp:
    params: {width: 8}
    inputs: [h]
    nodes:
      fc: {op: linear, in: h, out: "${width}"}
      act: {op: tanh}
    outputs: [act]
nodes:
"""


def _build(tmp_path: Path, nodes: str, outputs: str) -> torch.fx.GraphModule:
    return graphc.lower_spec(_write(tmp_path, MLP + nodes + outputs), seed=0).module


def _mlp(gm: torch.fx.GraphModule, path: str, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(gm.get_submodule(f"{path}.fc")(x))


def test_shares_a_later_call_that_reads_its_output(tmp_path: Path) -> None:
    """Sharing is no data edge: ``a`` runs ``b``'s module, and ``b`` reads ``a``."""
    gm = _build(tmp_path, "  a: {block: mlp, in: x, shares: b}\n  b: {block: mlp, in: a}\n", "outputs: {out: b}\n")
    assert sorted(gm.state_dict()) == ["b.fc.bias", "b.fc.weight"]
    x = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(gm(x, x), _mlp(gm, "b", _mlp(gm, "b", x)))


def test_repeated_calls_share_copy_by_copy_and_chains_end_at_the_owner(tmp_path: Path) -> None:
    nodes = ("  l: {block: mlp, in: x, repeat: 2}\n"
             "  r: {block: mlp, in: y, repeat: 2, shares: l}\n"
             "  s: {block: mlp, in: y, repeat: 2, shares: r}\n"
             "  sum: {op: add, in: [l, r, s]}\n")
    gm = _build(tmp_path, nodes, "outputs: {out: sum}\n")
    assert sorted(gm.state_dict()) == [f"l.{i}.fc.{p}" for i in (0, 1) for p in ("bias", "weight")]
    x, y = torch.randn(2, 8), torch.randn(2, 8)
    with torch.no_grad():
        def tower(v: torch.Tensor) -> torch.Tensor:
            return _mlp(gm, "l.1", _mlp(gm, "l.0", v))
        torch.testing.assert_close(gm(x, y), tower(x) + 2 * tower(y))


def test_sharing_inside_a_repeated_block_is_per_copy(tmp_path: Path) -> None:
    pair = """\
  pair:
    inputs: [p, q]
    nodes:
      a: {block: mlp, in: p}
      b: {block: mlp, in: q, shares: a}
      s: {op: add, in: [a, b]}
    outputs: [s, q]
nodes:
"""
    text = MLP.removesuffix("nodes:\n") + pair + "  two: {block: pair, in: [x, y], repeat: 2}\noutputs: {out: two.s}\n"
    gm = graphc.lower_spec(_write(tmp_path, text), seed=0).module
    assert sorted(gm.state_dict()) == [f"two.{i}.a.fc.{p}" for i in (0, 1) for p in ("bias", "weight")]
    x, y = torch.randn(2, 8), torch.randn(2, 8)
    with torch.no_grad():
        s0 = _mlp(gm, "two.0.a", x) + _mlp(gm, "two.0.a", y)
        torch.testing.assert_close(gm(x, y), _mlp(gm, "two.1.a", s0) + _mlp(gm, "two.1.a", y))


def test_a_call_that_shares_a_copy_with_sharing_inside(tmp_path: Path) -> None:
    """``two`` runs ``one``'s module, inside which ``b`` runs ``a``'s: one linear in all."""
    pair = """\
  pair:
    inputs: [p, q]
    nodes:
      a: {block: mlp, in: p}
      b: {block: mlp, in: q, shares: a}
      s: {op: add, in: [a, b]}
    outputs: [s, q]
nodes:
"""
    top = "  one: {block: pair, in: [x, y]}\n  two: {block: pair, in: [y, x], shares: one}\n  sum: {op: add, in: [one.s, two.s]}\n"
    path = _write(tmp_path, MLP.removesuffix("nodes:\n") + pair + top + "outputs: {out: sum}\n")
    assert graphc.summary(path).total_params == 8 * 8 + 8
    gm = graphc.lower_spec(path, seed=0).module
    assert sorted(gm.state_dict()) == ["one.a.fc.bias", "one.a.fc.weight"]
    x, y = torch.randn(2, 8), torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(gm(x, y), 2 * (_mlp(gm, "one.a", x) + _mlp(gm, "one.a", y)))


def test_a_tie_into_a_sharing_call_names_the_owner(tmp_path: Path) -> None:
    nodes = ("  l: {block: mlp, in: x}\n"
             "  r: {block: mlp, in: y, shares: l}\n"
             "  head: {op: linear, in: r, out: 8, tie: r.fc}\n")
    built = graphc.lower_spec(_write(tmp_path, MLP + nodes + "outputs: {out: head}\n"), seed=0)
    assert built.graph.ties["head"] == {"weight": ("l.fc", "weight"), "bias": ("l.fc", "bias")}
    gm = built.module
    assert gm.get_submodule("head").weight is gm.get_submodule("l.fc").weight


ATTN = """\
graphc: 1
name: shared_attention
inputs:
  batched: {shape: [B, T, 16]}
  single: {shape: [T, 16]}
blocks:
  enc:
    inputs: [h]
    nodes:
      att: {op: attention, in: h, heads: 2}
    outputs: [att]
nodes:
  a: {block: enc, in: batched}
  b: {block: enc, in: single, shares: a}
outputs: {a: a, b: b}
"""


# the same, with the attention one block further in: the outer copies' code is alike
ATTN_NESTED = ATTN.replace("""      att: {op: attention, in: h, heads: 2}
""", """      inner: {block: att_block, in: h}
    outputs: [inner]
  att_block:
    inputs: [h]
    nodes:
      att: {op: attention, in: h, heads: 2}
""")


@pytest.mark.parametrize("text", [ATTN, ATTN_NESTED], ids=["direct", "nested"])
def test_inputs_that_lower_to_other_code_are_refused_at_the_call(tmp_path: Path, text: str) -> None:
    """Same block, same params, same weights, but attention on [T, D] lowers with an extra
    batch dim: one module cannot run both, and the error points at the sharing call."""
    path = _write(tmp_path, text)
    assert graphc.summary(path).total_params > 0  # the graph phase accepts it: weights agree
    with pytest.raises(LowerError) as e:
        graphc.lower_spec(path, seed=0)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("  b: "))
    assert e.value.diagnostics[0].pos.line == line
    assert "block call 'b' shares 'a'" in str(e.value)


def test_inputs_of_other_sizes_share_when_the_code_is_the_same(tmp_path: Path) -> None:
    """A pooled conv tower runs on 8x8 and 12x12 images alike (checked on the meta device)."""
    text = SIAMESE.read_text().replace("image_b: {shape: [B, 1, 8, 8]", "image_b: {shape: [B, 1, 12, 12]")
    gm = graphc.lower_spec(_write(tmp_path, text), seed=0).module.eval()
    a, b = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        out = gm(a, b)
        torch.testing.assert_close(out["emb_b"], gm.get_submodule("left")(b))
    assert not any(k.startswith("right.") for k in gm.state_dict())


def _chain(n: int, last: str) -> str:
    """``n`` calls of one block, each sharing the next one's weights (the walk's worst case)."""
    calls = "".join(f"  c{i}: {{block: m, in: {'x' if i == 0 else f'c{i - 1}'}, shares: c{i + 1}}}\n" for i in range(n - 1))
    return (f"graphc: 1\nname: chain\ninputs:\n  x: {{shape: [B, 4]}}\nblocks:\n  m:\n    inputs: [h]\n    nodes:\n"
            f"      fc: {{op: linear, in: h, out: 4}}\n    outputs: [fc]\nnodes:\n{calls}  c{n - 1}: {last}\noutputs: {{y: c{n - 1}}}\n")


def test_a_long_chain_of_shares_checks_in_bounded_time(tmp_path: Path) -> None:
    path = _write(tmp_path, _chain(3000, f"{{block: m, in: c{3000 - 2}}}"))
    r = run_guarded("check", str(path))
    assert_clean(r, codes=(0,), positioned=False)
    assert "20 params" in r.out  # 3000 calls, one linear's weights


def test_a_wrong_link_is_reported_once_at_its_own_call(tmp_path: Path) -> None:
    """``c0 .. c8`` share along a chain whose last link names no call: one error, at c9."""
    path = _write(tmp_path, _chain(10, "{block: m, in: c8, shares: nowhere}"))
    r = run_cli("check", str(path))
    assert r.code == 1
    lines = r.err.splitlines()
    assert lines[-1] == "1 error"
    assert "nodes.c9.shares: unknown block call 'nowhere'" in lines[0]
