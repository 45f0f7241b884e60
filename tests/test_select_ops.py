"""Selection, ordering and comparison ops (graphc/ops/select.py): ONNX export of every op
table row, the shape rules' errors, and BERT fed HF's 0/1 ``attention_mask`` through ``eq``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
import yaml
from test_ops import one_op_spec

import graphc
from graphc.ops import REGISTRY, Example

SPECS = Path(__file__).resolve().parents[1] / "specs"
SELECT = [(name, ex) for name, d in sorted(REGISTRY.items()) if d.cls.__module__ == "graphc.ops.select" for ex in d.cls.examples]
SELECT_IDS = [f"{name}-{ex.id or i}" for name, d in sorted(REGISTRY.items()) if d.cls.__module__ == "graphc.ops.select"
              for i, ex in enumerate(d.cls.examples)]


def test_every_issue_op_is_registered() -> None:
    want = {"topk", "sort", "argsort", "argmax", "argmin", "index_select", "gather", "eq", "ne", "lt", "le", "gt", "ge", "where"}
    assert want <= {name for name, _ in SELECT}


# Rows valid only from some size of a symbolic dim up: export verification also runs every
# symbolic dim at size 1 (graphc/export/verify.py), where they fail in torch and onnxruntime alike.
NEEDS_SIZE = {
    "topk-smallest-symbolic": "k 2 of a symbolic dim: at T=1 there are fewer than k entries",
    "index_select-tensor": "index values < 2 select from dim T: out of range at T=1",
    "gather-dim1": "index values < 2 gather from dim T: out of range at T=1",
}


@pytest.mark.parametrize(("op_name", "ex"), SELECT, ids=SELECT_IDS)
def test_exports_to_the_declared_onnx_ops_and_verifies(op_name: str, ex: Example, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Each row exports, onnxruntime agrees with torch (verify), and the declared ops appear."""
    reason = NEEDS_SIZE.get(request.node.callspec.id)
    if reason:
        pytest.skip(reason)
    out = tmp_path / "m.onnx"
    result = graphc.export_onnx(one_op_spec(op_name, ex), out)
    assert result.verify is not None
    model = onnx.load(str(out))
    used = {n.op_type for n in model.graph.node} | {n.op_type for f in model.functions for n in f.node}
    declared = set(REGISTRY[op_name].cls.onnx.ops)
    assert declared <= used, f"{op_name}: declared {sorted(declared)}, exported {sorted(used)}"


def _out_types(op_name: str, args: dict[str, Any], inputs: tuple[str, ...]) -> list[str]:
    return [str(t) for t in graphc.check(one_op_spec(op_name, Example(args, inputs))).output_types().values()]


def test_shapes_stay_symbolic() -> None:
    assert _out_types("topk", {"k": 2, "dim": 1}, ("B,T,4",)) == ["[B, 2, 4]", "[B, 2, 4] int64"]
    assert _out_types("sort", {"dim": 1}, ("B,T,4",)) == ["[B, T, 4]", "[B, T, 4] int64"]
    assert _out_types("argmax", {"dim": 1}, ("B,T,4",)) == ["[B, 4] int64"]
    assert _out_types("argmin", {}, ("B,T",)) == ["[] int64"]
    assert _out_types("index_select", {"dim": 1}, ("B,T,4", "L:int64<2")) == ["[B, L, 4]"]
    assert _out_types("index_select", {"dim": 2, "index": [0, 0, -1]}, ("B,T,4",)) == ["[B, T, 3]"]
    assert _out_types("gather", {"dim": 1}, ("B,T,4", "B,L,4:int64<2")) == ["[B, L, 4]"]
    assert _out_types("lt", {}, ("B,1,4", "T,1")) == ["[B, T, 4] bool"]
    assert _out_types("where", {}, ("B,T:bool", "B,T:int64<3", "T:float16")) == ["[B, T] float16"]
    assert _out_types("where", {"value": 0}, ("B,T:bool", "B,T:int64<3")) == ["[B, T] int64"]


BAD = [
    ("topk", {"k": 5}, ("B,4",), "k 5 is larger than dim 1 of [B, 4]"),
    ("topk", {"k": 9, "dim": 1}, ("B,T,4",), "k 9 is larger than dim 'T' at its example size"),
    ("argmax", {"dim": 2}, ("B,4",), "dim 2 is out of range for a rank-2 input"),
    ("index_select", {"dim": 1, "index": [0, 4]}, ("B,4",), "index 4 is out of range for dim 1 of [B, 4]"),
    ("index_select", {"dim": 1}, ("B,4",), "give the indices either as 'index: [...]' or as a second input"),
    ("index_select", {"dim": 1, "index": [0]}, ("B,4", "2:int64<4"), "not both or neither"),
    ("index_select", {"dim": 1}, ("B,4", "2"), "index must be an int64 or int32 tensor, got float32"),
    ("index_select", {"dim": 1}, ("B,4", "B,2:int64<4"), "index must be 1-D"),
    ("index_select", {"dim": 1, "index": [-1]}, ("B,T",), "a negative index needs a fixed-size dim, got symbolic 'T'"),
    ("index_select", {"dim": 1, "index": [0, 99]}, ("B,T",), "index 99 is out of range for dim 1 of [B, T] at its example size"),
    ("index_select", {"dim": 1}, ("B,T", "3:int64<99"), "index 98 is out of range for dim 1 of [B, T] at its example size"),
    ("gather", {"dim": 1}, ("B,4", "B:int64<4"), "must have the rank of x"),
    ("gather", {"dim": 1}, ("B,T", "B,3:int64<99"), "index values up to 98 are out of range for dim 1 of [B, T] at its example size"),
    ("gather", {"dim": 1}, ("B,T,4", "B,2,T:int64<4"), "dim 2 of index [B, 2, T] int64 must not exceed dim 2 of x [B, T, 4]"),
    ("eq", {}, ("B,4", "3"), "do not broadcast"),
    ("eq", {}, ("B,4",), "compare with either a second input or 'value'"),
    ("where", {}, ("B,4", "B,4", "B,4"), "cond must be a bool tensor, got float32"),
    ("where", {"value": 0.5}, ("B,4:bool", "B,4:int64<3"), "value 0.5 does not fit a's dtype int64"),
]


@pytest.mark.parametrize(("op_name", "args", "inputs", "message"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_shape_errors_are_clear(op_name: str, args: dict[str, Any], inputs: tuple[str, ...], message: str) -> None:
    with pytest.raises(graphc.errors.ShapeError) as err:
        graphc.check(one_op_spec(op_name, Example(args, inputs)))
    assert message in str(err.value)
    assert "error: nodes.n: " in str(err.value)


def _bert_with_attention_mask() -> dict[str, Any]:
    """specs/bert.yaml taking HF's int ``attention_mask`` (1 = token, 0 = padding) instead of a
    bool ``pad_mask``: ``pad = eq(attention_mask, 0)`` feeds every layer's key padding mask."""
    doc = yaml.safe_load((SPECS / "bert.yaml").read_text())
    doc["inputs"]["attention_mask"] = {"shape": ["B", "T"], "dtype": "int64", "range": [0, 2]}
    del doc["inputs"]["pad_mask"]
    nodes: dict[str, Any] = {}
    for name, node in doc["nodes"].items():
        if name == "body":
            nodes["pad"] = {"op": "eq", "in": "attention_mask", "value": 0}
            node = {**node, "in": ["emb_drop", "pad"]}
        nodes[name] = node
    doc["nodes"] = nodes
    return doc


def test_bert_takes_hf_attention_mask_directly() -> None:
    """Equal to the bool ``pad_mask`` spec exactly, and to HF BertModel given attention_mask."""
    transformers = pytest.importorskip("transformers")
    from test_zoo import _bert_state

    layers, d, heads, ff, vocab, ctx = 2, 64, 4, 128, 512, 64
    overrides = {"layers": layers, "d": d, "heads": heads, "ff": ff, "vocab": vocab, "ctx": ctx, "inputs.input_ids.example.T": 16}
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ff,
                                  vocab_size=vocab, max_position_embeddings=ctx)
    hf = transformers.BertModel(cfg).eval()
    ours = graphc.build(graphc.load_spec(_bert_with_attention_mask(), overrides), seed=0).eval()
    plain = graphc.build(graphc.load_spec(SPECS / "bert.yaml", overrides), seed=0).eval()
    ours.load_state_dict(_bert_state(hf, layers), strict=True)
    plain.load_state_dict(_bert_state(hf, layers), strict=True)
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, vocab, (3, 11), generator=gen)
    types = torch.randint(0, 2, (3, 11), generator=gen)
    attention_mask = torch.ones(3, 11, dtype=torch.long)
    attention_mask[1, 7:] = 0
    attention_mask[2, 4:] = 0
    with torch.no_grad():
        got = ours(ids, types, attention_mask)
        via_bool = plain(ids, types, attention_mask == 0)
        theirs = hf(input_ids=ids, token_type_ids=types, attention_mask=attention_mask)
    for key in ("last_hidden_state", "pooler_output"):
        assert torch.equal(got[key], via_bool[key])
    torch.testing.assert_close(got["last_hidden_state"], theirs.last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["pooler_output"], theirs.pooler_output, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # the mask matters: without it the padded rows differ
        unmasked = ours(ids, types, torch.ones_like(attention_mask))
    assert not torch.allclose(unmasked["last_hidden_state"][1, :7], got["last_hidden_state"][1, :7], atol=1e-4)
