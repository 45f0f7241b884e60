"""Per-copy arguments in ``repeat``: ``repeat: {over: {out: [8, 16], stride: [1, 2]}}``.

Copy ``i`` of the call gets the ``i``-th value of every list as the block param of that
name; copies keep the names of a counted repeat (``body.0``, ``body.1``, ...), so their
``state_dict`` names are predictable.  The mistakes are pinned as golden errors in
tests/invalid/repeat_lists_*.yaml; this file checks what the copies become (names, param
shapes, summary, FLOPs, ONNX) and the VGG-11 spec that uses the form.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli
from hostile import assert_clean, assert_unchanged, run_guarded, snapshot
from torch import nn

import graphc
from graphc.errors import SpecError

STAGE = """
graphc: 1
name: stages
inputs:
  x: {shape: [B, 3, 16, 16], example: {B: 2}}
blocks:
  stage:
    params: {out: int, stride: 1, scale: 1.0}
    inputs: [x]
    nodes:
      conv: {op: conv2d, in: x, out: "${out}", kernel: 3, stride: "${stride}", padding: 1}
      act: {op: relu}
    outputs: [act]
nodes:
  body: BODY
  pool: {op: adaptive_avg_pool2d, size: 1}
  flat: {op: flatten}
  head: {op: linear, out: 4}
outputs: {y: head}
"""

OUTS, STRIDES = [8, 16, 32], [1, 2, 2]
PER_COPY = "{block: stage, in: x, repeat: {over: {out: [8, 16, 32], stride: [1, 2, 2]}}}"


def _spec(body: str) -> str:
    return STAGE.replace("BODY", body)


def _spelled_out() -> str:
    """The same model written as one block call per copy (the form per-copy lists replace)."""
    calls = "\n".join(
        f"  body{i}: {{block: stage, out: {o}, stride: {s}}}" for i, (o, s) in enumerate(zip(OUTS, STRIDES, strict=True))
    )
    return STAGE.replace("  body: BODY", calls)


def test_copies_are_named_like_a_counted_repeat() -> None:
    tg = graphc.check(_spec(PER_COPY))
    assert [n for n in tg.flat.instances] == ["body.0", "body.1", "body.2"]
    ops = [n.name for n in tg.flat.op_nodes()]
    assert ops[:6] == ["body.0.conv", "body.0.act", "body.1.conv", "body.1.act", "body.2.conv", "body.2.act"]


def test_each_copy_gets_its_values_as_params() -> None:
    tg = graphc.check(_spec(PER_COPY))
    params = [tg.flat.instances[f"body.{i}"].params for i in range(3)]
    assert [(p["out"], p["stride"], p["index"]) for p in params] == [(o, s, i) for i, (o, s) in enumerate(zip(OUTS, STRIDES, strict=True))]
    # per-copy values reach the ops: weight shapes chain the widths, strides halve H and W
    cins = [3, *OUTS[:-1]]
    assert [tg.params[f"body.{i}.conv"]["weight"] for i in range(3)] == [(o, c, 3, 3) for o, c in zip(OUTS, cins, strict=True)]
    summary = graphc.summary(tg)
    shapes = {r.name: r.shape for r in summary.nodes}
    assert [shapes[f"body.{i}.act"] for i in range(3)] == ["[B, 8, 16, 16]", "[B, 16, 8, 8]", "[B, 32, 4, 4]"]


def test_state_dict_names_and_shapes_match_the_check() -> None:
    tg = graphc.check(_spec(PER_COPY))
    gm = graphc.build(tg, seed=0)
    got = {k: tuple(v.shape) for k, v in gm.state_dict().items()}
    want = {f"{node}.{p}": shape for node, ps in tg.params.items() for p, shape in ps.items()}
    assert got == want
    assert "body.1.conv.weight" in got and got["body.1.conv.weight"] == (16, 8, 3, 3)


def test_summary_and_flops_equal_the_spelled_out_calls() -> None:
    ours = graphc.summary(_spec(PER_COPY))
    spelled = graphc.summary(_spelled_out())
    assert ours.total_params == spelled.total_params
    assert ours.flops == spelled.flops
    # and against the formula: conv weights + biases, then the 32 -> 4 head
    cins = [3, *OUTS[:-1]]
    assert ours.total_params == sum(c * o * 9 + o for c, o in zip(cins, OUTS, strict=True)) + 32 * 4 + 4
    assert [r.flops for r in ours.nodes if r.name.endswith(".conv")] == [r.flops for r in spelled.nodes if r.name.endswith(".conv")]


def test_index_still_counts_the_copies() -> None:
    body = "{block: stage, in: x, repeat: {over: {out: [8, 8, 8]}}, stride: \"${1}\"}"
    text = _spec(body).replace('out: "${out}", kernel: 3', 'out: "${out + index}", kernel: 3')
    tg = graphc.check(text)
    assert [tg.params[f"body.{i}.conv"]["weight"][0] for i in range(3)] == [8, 9, 10]


def test_values_may_be_expressions_floats_and_n_may_be_written() -> None:
    text = _spec("{block: stage, in: x, repeat: {n: 2, over: {out: [\"${w}\", \"${2 * w}\"], scale: [1, 0.5]}}}")
    text = text.replace("name: stages", "name: stages\nparams: {w: 4}")
    tg = graphc.check(text)
    assert [tg.flat.instances[f"body.{i}"].params["out"] for i in range(2)] == [4, 8]
    scales = [tg.flat.instances[f"body.{i}"].params["scale"] for i in range(2)]
    assert scales == [1.0, 0.5] and all(isinstance(s, float) for s in scales)  # a float param stays float


def test_one_copy_still_has_an_index_in_its_name() -> None:
    tg = graphc.check(_spec("{block: stage, in: x, repeat: {over: {out: [8]}}}"))
    assert list(tg.flat.instances) == ["body.0"]


def test_per_copy_lists_inside_a_block() -> None:
    """A block may itself call another with per-copy lists made from its own params."""
    text = _spec("{block: pair, in: x, w: 4}").replace("blocks:\n", """blocks:
  pair:
    params: {w: int}
    inputs: [x]
    nodes:
      s: {block: stage, in: x, repeat: {over: {out: ["${w}", "${3 * w}"]}}}
    outputs: [s]
""")
    tg = graphc.check(text)
    assert [tg.params[f"body.s.{i}.conv"]["weight"][0] for i in range(2)] == [4, 12]


def test_repeat_limit_counts_the_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRAPHC_MAX_REPEAT", "3")
    spec = tmp_path / "s.yaml"
    spec.write_text(_spec("{block: stage, in: x, repeat: {over: {out: [8, 8, 8, 8]}}}"))
    lines = spec.read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if "[8, 8, 8, 8]" in t)
    col = lines[line - 1].index("[8, 8, 8, 8]") + 1  # the error points at the list
    r = run_cli("check", str(spec))
    assert r.code == 1 and "Traceback" not in r.err
    assert f"{spec}:{line}:{col}: error: nodes.body.repeat: repeat 4: over the limit of 3 copies per block call" in r.err
    monkeypatch.setenv("GRAPHC_MAX_REPEAT", "4")
    assert run_cli("check", str(spec)).code == 0


def test_mistakes_are_reported_together() -> None:
    """Several bad lists of one call are all reported, each at its own line."""
    body = "{block: stage, in: x, repeat: {over: {outs: [8, 8], stride: [1, 2, 2], out: [8, wide]}}}"
    with pytest.raises(SpecError) as e:
        graphc.check(_spec(body))
    text = [d.message for d in e.value.diagnostics]
    assert any("no param 'outs' (did you mean 'out'?)" in m for m in text)
    assert any("repeat.over.out.1: block param 'out' expects int, got 'wide'" in m for m in text)
    assert any("repeat.over.stride: 3 value(s), but repeat.over.outs has 2" in m for m in text)
    with pytest.raises(SpecError) as e:
        graphc.check(_spec("{block: stage, in: x, repeat: {over: {outs: [8, 8]}}}"))
    assert [d.message for d in e.value.diagnostics] == [
        "nodes.body.repeat.over.outs: block 'stage' has no param 'outs' (did you mean 'out'?)"]  # not also "needs param 'out'"


def test_a_value_that_is_no_scalar_is_one_line_naming_the_param() -> None:
    with pytest.raises(SpecError) as e:
        graphc.check(_spec("{block: stage, in: x, repeat: {over: {out: [[8], 16]}}}"))
    assert [d.message for d in e.value.diagnostics] == ["nodes.body.repeat.over.out.0: block param 'out' expects int, got [8]"]


def test_huge_per_copy_list_is_refused_before_unrolling(tmp_path: Path) -> None:
    """150,000 per-copy values (under the YAML value limit) end in the repeat limit's error,
    in bounded time and memory, and nothing is written."""
    (tmp_path / "spec.yaml").write_text(_spec("{block: stage, in: x, repeat: {over: {out: [" + ", ".join(["8"] * 150_000) + "]}}}"))
    before = snapshot(tmp_path)
    r = run_guarded("check", "spec.yaml", cwd=tmp_path)
    assert_clean(r, contains="nodes.body.repeat: repeat 150,000: over the limit of 10,000 copies per block call")
    assert_unchanged(before, snapshot(tmp_path))


def test_onnx_export_of_per_copy_repeat_verifies(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = graphc.export_onnx(_spec(PER_COPY), out, verify=True)
    assert out.is_file() and result.verify is not None and result.verify.passed


# --- VGG-11 --------------------------------------------------------------------------

VGG11 = ROOT / "specs" / "vgg11.yaml"
CFG_A = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]  # torchvision's cfgs["A"]


def _vgg11_params(width: int, hidden: int, classes: int, pool: int) -> int:
    """torchvision's vgg11 parameter count, by hand from configuration A (its C ops do not
    load here): 3x3 convs with bias, then three linear layers."""
    total, cin = 0, 3
    for v in CFG_A:
        if v != "M":
            cout = int(v) * width // 64
            total += cin * cout * 9 + cout
            cin = cout
    feats = cin * pool * pool
    return total + feats * hidden + hidden + hidden * hidden + hidden + hidden * classes + classes


def test_vgg11_param_count_equals_torchvision() -> None:
    assert _vgg11_params(64, 4096, 1000, 7) == 132_863_336  # torchvision.models.vgg11()
    assert graphc.summary(VGG11).total_params == 132_863_336


def _torchvision_like_vgg(width: int, hidden: int, classes: int, pool: int) -> nn.Sequential:
    """torchvision.models.vgg.VGG(make_layers(cfgs['A'])) re-typed as one nn.Sequential."""
    layers: list[nn.Module] = []
    cin = 3
    for v in CFG_A:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            cout = int(v) * width // 64
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
            cin = cout
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(pool), nn.Flatten(),
        nn.Linear(cin * pool * pool, hidden), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, classes),
    )


def test_vgg11_equals_torchvision_layout_with_copied_weights() -> None:
    width, hidden, classes, pool = 8, 32, 10, 7
    sets = {"width": width, "hidden": hidden, "classes": classes, "pool": pool, "inputs.image.example.H": 1, "inputs.image.example.W": 1}
    gm = graphc.build(graphc.load_spec(VGG11, sets), seed=0).eval()
    ref = _torchvision_like_vgg(width, hidden, classes, pool).eval()
    ours = list(gm.state_dict().items())
    theirs = list(ref.state_dict().items())
    assert len(ours) == len(theirs) and sum(p.numel() for p in gm.parameters()) == _vgg11_params(width, hidden, classes, pool)
    assert [k for k, _ in ours][:4] == ["features.0.body.0.conv.weight", "features.0.body.0.conv.bias",
                                        "features.1.body.0.conv.weight", "features.1.body.0.conv.bias"]
    # both list their tensors in layer order, so the copy is positional (shapes checked by load)
    gm.load_state_dict({k: v for (k, _), (_, v) in zip(ours, theirs, strict=True)}, strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(gm(x), ref(x), atol=1e-5, rtol=1e-5)
