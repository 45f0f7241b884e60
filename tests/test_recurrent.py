"""lstm / gru ops against torch.nn.LSTM / torch.nn.GRU with the same weights."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import graphc
from graphc.errors import GraphcError


def _spec(op: str, states: list[str], **args: Any) -> dict[str, Any]:
    """A one-node spec; ``states`` adds initial-state inputs and state outputs."""
    d = 2 if args.get("bidirectional") else 1
    inputs: dict[str, Any] = {"x": {"shape": ["B", "T", 4], "example": {"B": 3, "T": 6}}}
    ins: dict[str, str] = {"x": "x"}
    for s in states:
        inputs[f"{s}0"] = {"shape": [args.get("layers", 1) * d, "B", args["hidden"]]}
        ins[f"{s}0"] = f"{s}0"
    outputs = {"out": "rnn"} | {s: f"rnn.{s}" for s in ("h", "c")[: 2 if op == "lstm" else 1]}
    return {"graphc": 1, "name": op, "inputs": inputs, "nodes": {"rnn": {"op": op, "in": ins, **args}}, "outputs": outputs}


CASES = [
    ("lstm", {"hidden": 5}),
    ("lstm", {"hidden": 5, "layers": 2, "bidirectional": True}),
    ("lstm", {"hidden": 3, "layers": 3, "bias": False}),
    ("gru", {"hidden": 5}),
    ("gru", {"hidden": 4, "layers": 2, "bidirectional": True}),
]


@pytest.mark.parametrize(("op", "args"), CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
def test_matches_torch(op: str, args: dict[str, Any], with_state: bool) -> None:
    states = (["h", "c"] if op == "lstm" else ["h"]) if with_state else []
    gm = graphc.build(_spec(op, states, **args), seed=0).eval()
    ref = getattr(torch.nn, op.upper())(4, args["hidden"], num_layers=args.get("layers", 1), bias=args.get("bias", True),
                                         batch_first=True, bidirectional=args.get("bidirectional", False)).eval()
    ref.load_state_dict({k.removeprefix("rnn."): v for k, v in gm.state_dict().items()})
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 4, generator=g)
    init = [torch.randn(ref.num_layers * (1 + ref.bidirectional), 3, ref.hidden_size, generator=g) for _ in states]
    with torch.no_grad():
        ours = gm(x, *init)
        out, last = ref(x, (tuple(init) if len(init) == 2 else init[0]) if init else None)
    expect = {"out": out} | ({"h": last[0], "c": last[1]} if op == "lstm" else {"h": last})
    assert set(ours) == set(expect)
    for k, v in expect.items():
        torch.testing.assert_close(ours[k], v, atol=1e-6, rtol=0)


def test_shapes_are_inferred() -> None:
    tg = graphc.check(_spec("lstm", [], hidden=5, layers=2, bidirectional=True))
    assert {k: str(v) for k, v in tg.output_types().items()} == {"out": "[B, T, 10]", "h": "[4, B, 5]", "c": "[4, B, 5]"}


def test_time_first_layout() -> None:
    spec = _spec("gru", [], hidden=3, batch_first=False)
    out = graphc.build(spec, seed=0)(torch.randn(6, 2, 4))
    assert out["out"].shape == (6, 2, 3) and out["h"].shape == (1, 2, 3)


@pytest.mark.parametrize(
    ("args", "states", "message"),
    [
        ({"hidden": 5, "dropout": 0.1}, [], "needs layers > 1"),
        ({"hidden": 5, "layers": 2}, ["h"], "give all initial states"),
    ],
)
def test_clear_errors(args: dict[str, Any], states: list[str], message: str) -> None:
    with pytest.raises(GraphcError, match=message):
        graphc.check(_spec("lstm", states, **args))


def test_wrong_state_shape() -> None:
    spec = _spec("gru", ["h"], hidden=5)
    spec["inputs"]["h0"]["shape"] = [2, "B", 5]
    with pytest.raises(GraphcError, match=r"initial state h0 must be \[1, B, 5\]"):
        graphc.check(spec)


def test_flops_count_gate_matmuls() -> None:
    s = graphc.summary(_spec("lstm", [], hidden=5))
    assert s.flops == 2 * 4 * 5 * (4 + 5) * 3 * 6  # gates * hidden * (in + hidden), per B * T


def test_lstm_classifier_spec_runs() -> None:
    overrides = {"layers": 1, "d": 16, "hidden": 16}  # the spec's graphc-ci line
    gm = graphc.build(graphc.check("specs/lstm_classifier.yaml", overrides), seed=0).eval()
    assert "lstm.weight_ih_l0_reverse" in gm.state_dict()
    tokens = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        assert gm(tokens).shape == (2, 4)
        assert gm(tokens[:, :3]).shape == (2, 4)  # any length
