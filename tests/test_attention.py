"""attention / rotary_embedding behaviour beyond the op table: errors, masks, references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import graphc
from graphc.errors import GraphcError
from graphc.lower import runtime as rt


def _spec(node: dict[str, Any], **inputs: str) -> dict[str, Any]:
    """A one-node spec; inputs are written ``"B,T,8"`` or ``"B,S:bool"``."""
    ins: dict[str, Any] = {}
    for name, text in inputs.items():
        dims, _, dtype = text.partition(":")
        ins[name] = {"shape": [int(d) if d.isdigit() else d for d in dims.split(",")], "dtype": dtype or "float32"}
    return {"graphc": 1, "name": "t", "inputs": ins, "nodes": {"n": node}, "outputs": {"y": "n"}}


def test_heads_must_divide_query_dim() -> None:
    with pytest.raises(GraphcError, match="query dim 10 is not divisible by heads=4"):
        graphc.check(_spec({"op": "attention", "in": "x", "heads": 4}, x="B,T,10"))


def test_mask_shape_is_checked() -> None:
    spec = _spec({"op": "attention", "in": {"query": "x", "key_padding_mask": "m"}, "heads": 2}, x="B,T,8", m="B,3:bool")
    with pytest.raises(GraphcError, match="key_padding_mask"):
        graphc.check(spec)


def test_cross_attention_matches_torch_multihead_attention() -> None:
    node = {"op": "attention", "in": {"query": "q", "key": "k", "value": "v", "key_padding_mask": "m"}, "heads": 2}
    gm = graphc.build(_spec(node, q="B,T,8", k="B,S,8", v="B,S,8", m="B,S:bool"), seed=0).eval()
    sd = gm.state_dict()
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    ref.load_state_dict({
        "in_proj_weight": torch.cat([sd[f"n.{p}.weight"] for p in "qkv"]),
        "in_proj_bias": torch.cat([sd[f"n.{p}.bias"] for p in "qkv"]),
        "out_proj.weight": sd["n.proj.weight"], "out_proj.bias": sd["n.proj.bias"],
    })
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 3:] = True  # True = ignore
    with torch.no_grad():
        torch.testing.assert_close(gm(q, k, v, mask), ref(q, k, v, key_padding_mask=mask)[0], atol=1e-5, rtol=0)


def test_masked_keys_do_not_matter() -> None:
    attn = rt.Attention(8, 8, 8, 2, 2, 4, 8, kind="q_kv").eval()
    q, k = torch.randn(1, 3, 8), torch.randn(1, 5, 8)
    mask = torch.tensor([[False, False, False, True, True]])
    k2 = k.clone()
    k2[:, 3:] = 100.0
    torch.testing.assert_close(attn(q, k, None, mask), attn(q, k2, None, mask))


def test_rotary_scores_depend_on_relative_position() -> None:
    q, k = torch.randn(1, 1, 1, 8).expand(1, 1, 10, 8), torch.randn(1, 1, 1, 8).expand(1, 1, 10, 8)
    s = rt.rotary(q) @ rt.rotary(k).transpose(-1, -2)  # [T, T] scores of one q and one k at all positions
    torch.testing.assert_close(s[0, 0, 2, 1], s[0, 0, 7, 6])  # same distance, same score
    torch.testing.assert_close(s[0, 0, 3, 3], (q[0, 0, 0] @ k[0, 0, 0]))  # distance 0: no change


def test_rotary_matches_hf_llama() -> None:
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    x = torch.randn(2, 3, 5, 8)  # [B, H, T, hd]
    inv = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    ang = torch.cat([torch.outer(torch.arange(5).float(), inv)] * 2, dim=-1)
    ref, _ = llama.apply_rotary_pos_emb(x, x, ang.cos()[None], ang.sin()[None])
    torch.testing.assert_close(rt.rotary(x), ref)
    packed = x.transpose(1, 2).flatten(-2)  # the op's [B, T, H*hd] layout
    torch.testing.assert_close(rt.Rotary(heads=3)(packed), ref.transpose(1, 2).flatten(-2))


def test_state_output_by_index() -> None:
    spec = {"graphc": 1, "name": "t", "inputs": {"x": {"shape": ["B", "T", 4]}},
            "nodes": {"r": {"op": "lstm", "hidden": 3}}, "outputs": {"seq": "r.0", "h": "r.h", "c": "r.c"}}
    types = {k: str(v) for k, v in graphc.check(spec).output_types().items()}
    assert types == {"seq": "[B, T, 3]", "h": "[1, B, 3]", "c": "[1, B, 3]"}


def test_unbatched_cross_attention_matches_torch_multihead_attention() -> None:
    node = {"op": "attention", "in": {"query": "q", "key": "k", "value": "v", "key_padding_mask": "m"}, "heads": 2}
    tg = graphc.check(_spec(node, q="T,8", k="S,8", v="S,8", m="S:bool"))
    assert tg.types[tg.flat.outputs["y"]].concrete({"T": 4, "S": 6}) == (4, 8)
    gm = graphc.build(tg, seed=0).eval()
    sd = gm.state_dict()
    ref = torch.nn.MultiheadAttention(8, 2).eval()  # unbatched inputs: [T, D], [S, D], mask [S]
    ref.load_state_dict({
        "in_proj_weight": torch.cat([sd[f"n.{p}.weight"] for p in "qkv"]),
        "in_proj_bias": torch.cat([sd[f"n.{p}.bias"] for p in "qkv"]),
        "out_proj.weight": sd["n.proj.weight"], "out_proj.bias": sd["n.proj.bias"],
    })
    q, k, v = torch.randn(4, 8), torch.randn(6, 8), torch.randn(6, 8)
    mask = torch.tensor([False, False, False, True, True, False])
    with torch.no_grad():
        torch.testing.assert_close(gm(q, k, v, mask), ref(q, k, v, key_padding_mask=mask)[0], atol=1e-5, rtol=0)


def test_unbatched_equals_a_batch_of_one() -> None:
    node = {"op": "attention", "in": "x", "heads": 2, "causal": True}
    batched = graphc.build(_spec(node, x="B,T,8"), seed=0).eval()
    unbatched = graphc.build(_spec(node, x="T,8"), seed=0).eval()
    x = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(unbatched(x), batched(x[None])[0])


def test_unbatched_query_needs_unbatched_key_and_masks() -> None:
    with pytest.raises(GraphcError, match=r"key \[S, D\] \(the query is unbatched\) must have rank 2"):
        graphc.check(_spec({"op": "attention", "in": ["q", "k"], "heads": 2}, q="T,8", k="B,S,8"))
    spec = _spec({"op": "attention", "in": {"query": "x", "key_padding_mask": "m"}, "heads": 2}, x="T,8", m="B,T:bool")
    with pytest.raises(GraphcError, match=r"key_padding_mask must be bool \[S\]"):
        graphc.check(spec)


def test_unbatched_attention_exports_and_verifies(tmp_path: Path) -> None:
    node = {"op": "attention", "in": {"query": "q", "key": "k", "attn_mask": "a"}, "heads": 2}
    res = graphc.export_onnx(_spec(node, q="T,8", k="S,12", a="2,T,S:bool"), tmp_path / "a.onnx")
    assert res.verify is not None and res.verify.passed and set(res.verify.outputs) == {"y"}
