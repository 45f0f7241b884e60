"""Weight maps, the transfer plan, readers and convert.

The shipped HF maps are proven the strong way: transformers builds a small random model,
``save_pretrained`` writes it as a Hugging Face folder (the offline stand-in for a download),
``graphc weights convert`` turns it into graphc weights with the shipped map, and the graphc
model's outputs equal transformers' within 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import graphc
import graphc.weights as gw
from graphc.cli import main
from graphc.errors import WeightsError

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
MAPS = SPECS / "maps"
GPT2 = {"layers": 2, "d": 64, "heads": 4, "vocab": 512, "ctx": 64, "inputs.tokens.example.T": 16}
BERT = {"layers": 2, "d": 64, "heads": 4, "ff": 128, "vocab": 512, "ctx": 64, "inputs.input_ids.example.T": 16}


def _sets(overrides: dict[str, Any]) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Every tensor random and non-trivial (LayerNorm weights not 1, biases not 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1 + (0.5 if t.dim() == 1 else 0.0))


def _convert(tmp_path: Path, spec: str, ckpt: Path, map_file: Path, overrides: dict[str, Any], *extra: str) -> Path:
    out = tmp_path / "converted.safetensors"
    code = main(["weights", "convert", str(SPECS / spec), "--from", str(ckpt), "--map", str(map_file), "-o", str(out),
                 *_sets(overrides), *extra])
    assert code == 0
    return out


def test_gpt2_hf_map_gives_equal_logits(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=512, n_positions=64)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    _randomise(hf, 0)
    hf.save_pretrained(tmp_path / "hf")
    out = _convert(tmp_path, "gpt2.yaml", tmp_path / "hf", MAPS / "gpt2_hf.yaml", GPT2)
    gm = graphc.build(graphc.load_spec(SPECS / "gpt2.yaml", GPT2), seed=1).eval()
    from graphc.export.weights import load_weights

    load_weights(gm, out)
    assert gm.head.weight is gm.tok.weight
    tokens = torch.randint(0, 512, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(gm(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)


def _bert_hf(tmp_path: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                  vocab_size=512, max_position_embeddings=64)
    hf = transformers.BertModel(cfg).eval()
    _randomise(hf, 2)
    hf.save_pretrained(tmp_path / "hf")
    return hf


def _bert_outputs(gm: torch.nn.Module, hf: Any) -> None:
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 512, (3, 11), generator=gen)
    types = torch.randint(0, 2, (3, 11), generator=gen)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    with torch.no_grad():
        ours = gm(ids, types, mask == 0)
        theirs = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    torch.testing.assert_close(ours["last_hidden_state"], theirs.last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours["pooler_output"], theirs.pooler_output, atol=1e-4, rtol=1e-4)


def test_bert_hf_map_gives_equal_outputs(tmp_path: Path) -> None:
    hf = _bert_hf(tmp_path)
    out = _convert(tmp_path, "bert.yaml", tmp_path / "hf", MAPS / "bert_hf.yaml", BERT)
    gm = graphc.build(graphc.load_spec(SPECS / "bert.yaml", BERT), seed=1).eval()
    from graphc.export.weights import load_weights

    load_weights(gm, out)
    _bert_outputs(gm, hf)


FUSED_BERT = """graphc-weights: 1
spec: bert
rules:
  - {from: ["encoder.layer.{i}.attention.self.query.{p}", "encoder.layer.{i}.attention.self.key.{p}",
            "encoder.layer.{i}.attention.self.value.{p}"], to: "body.{i}.attn.qkv.{p}", concat: 0}
"""


def test_concat_separate_qkv_into_fused(tmp_path: Path) -> None:
    """BERT's separate q/k/v joined into a fused-qkv spec: same outputs (concat direction)."""
    hf = _bert_hf(tmp_path)
    shipped = (MAPS / "bert_hf.yaml").read_text().split("rules:\n")[1]
    fused = tmp_path / "fused.yaml"
    fused.write_text(FUSED_BERT + "\n".join(ln for ln in shipped.splitlines() if "self." not in ln) + "\n")
    overrides = {**BERT, "blocks.encoder.nodes.attn.fused": "true"}
    spec = graphc.load_spec(SPECS / "bert.yaml", overrides)
    gm = gw.load(spec, tmp_path / "hf", map=fused)
    assert "body.0.attn.qkv.weight" in gm.state_dict()
    _bert_outputs(gm.eval(), hf)


def test_split_fused_qkv_into_separate(tmp_path: Path) -> None:
    """A fused [3d, d] tensor split into q, k, v (split direction), and transpose + reshape + dtype."""
    d = 8
    qkv = torch.randn(d, 3 * d)
    save_file({"c_attn.weight": qkv, "vec": torch.arange(6.0).reshape(1, 1, 6)}, str(tmp_path / "ck.safetensors"))
    spec = tmp_path / "s.yaml"
    spec.write_text(f"""graphc: 1
name: tiny
inputs: {{x: {{shape: [B, {d}]}}}}
nodes:
  q: {{op: linear, in: x, out: {d}, bias: false}}
  k: {{op: linear, in: x, out: {d}, bias: false}}
  v: {{op: linear, in: x, out: {d}, bias: false}}
  vec: {{op: parameter, shape: [6]}}
  s: {{op: add, in: [q, k]}}
  s2: {{op: add, in: [s, v]}}
outputs: {{y: s2, vec: vec}}
""")
    wmap = tmp_path / "m.yaml"
    wmap.write_text("""graphc-weights: 1
spec: tiny
rules:
  - {from: c_attn.weight, to: [q.weight, k.weight, v.weight], transpose: true, split: 0}
  - {from: vec, to: vec.weight, reshape: [-1], dtype: float64}
""")
    plan = gw.plan(spec, tmp_path / "ck.safetensors", map=wmap)
    assert plan.count()["transformed"] == 4 and not plan.problems(partial=False)
    out = gw.convert(spec, tmp_path / "ck.safetensors", tmp_path / "out.safetensors", map=wmap).output
    from safetensors.torch import load_file

    got = load_file(str(out))
    torch.testing.assert_close(got["k.weight"], qkv.t()[d:2 * d])
    assert got["vec.weight"].dtype == torch.float64 and got["vec.weight"].shape == (6,)


def test_plan_without_map_after_editing_the_head(tmp_path: Path) -> None:
    """An earlier run's weights into a spec with a new head: carried, new, mismatch and unused rows."""
    old = graphc.build(graphc.load_spec(SPECS / "mlp.yaml"), seed=0)
    from graphc.export.weights import save_weights

    save_weights(old, tmp_path / "best.safetensors")
    plan = gw.plan(SPECS / "mlp.yaml", tmp_path, overrides=["classes=7"])  # a new 7-class head
    counts = plan.count()
    assert counts["mismatch"] == 2 and counts["carried"] == len(plan.rows) - 2
    row = next(r for r in plan.rows if r.status == "mismatch")
    assert row.name.startswith("fc2.") and row.where.startswith(str(SPECS / "mlp.yaml") + ":")
    with pytest.raises(WeightsError, match="shape mismatch"):
        gw.require(plan, partial=True)


def test_plan_cli_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gm = graphc.build(graphc.load_spec(SPECS / "mlp.yaml"), seed=0)
    sd = {k: v for k, v in gm.state_dict().items()}
    first = next(iter(sd))
    extra = {"stale.weight": torch.zeros(2)}
    save_file({**{k: v for k, v in sd.items() if k != first}, **extra}, str(tmp_path / "w.safetensors"))
    assert main(["weights", "plan", str(SPECS / "mlp.yaml"), "--from", str(tmp_path / "w.safetensors"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["new"] == 1 and report["counts"]["unused"] == 1
    assert main(["weights", "plan", str(SPECS / "mlp.yaml"), "--from", str(tmp_path / "w.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "new" in text and "stale.weight" in text
    code = main(["weights", "convert", str(SPECS / "mlp.yaml"), "--from", str(tmp_path / "w.safetensors"), "-o", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err
    assert code == 1 and first in err and "stale.weight" in err and not (tmp_path / "o.safetensors").exists()
    code = main(["weights", "convert", str(SPECS / "mlp.yaml"), "--from", str(tmp_path / "w.safetensors"), "-o",
                 str(tmp_path / "o.safetensors"), "--partial"])
    assert code == 0 and first in capsys.readouterr().out


def test_readers_sharded_index_and_torch_file(tmp_path: Path) -> None:
    gm = graphc.build(graphc.load_spec(SPECS / "mlp.yaml"), seed=0)
    sd = gm.state_dict()
    names = list(sd)
    half = len(names) // 2
    save_file({k: sd[k] for k in names[:half]}, str(tmp_path / "a.safetensors"))
    torch.save({k: sd[k] for k in names[half:]}, tmp_path / "b.bin")
    index = {"weight_map": {**{k: "a.safetensors" for k in names[:half]}, **{k: "b.bin" for k in names[half:]}}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = gw.load(SPECS / "mlp.yaml", tmp_path, seed=5)
    for k, v in sd.items():
        torch.testing.assert_close(loaded.state_dict()[k], v)


def test_map_errors_all_at_once(tmp_path: Path) -> None:
    wmap = tmp_path / "m.yaml"
    wmap.write_text("graphc-weights: 1\nspec: mlp\nrules:\n  - {from: a, to: b, drop: true}\n  - {form: x, to: y}\n  - {from: [a, b], to: c}\n")
    with pytest.raises(WeightsError) as e:
        gw.load_map(wmap)
    lines = str(e.value).splitlines()
    assert len(lines) == 3 and all(ln.startswith(f"{wmap}:") for ln in lines)
    assert "did you mean 'from'" in str(e.value)


def test_weights_map_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "graphc-weights" in schema["properties"] and "from" in schema["$defs"]["Rule"]["properties"]


def test_plan_of_safetensors_imports_no_torch(tmp_path: Path) -> None:
    """The planner reads headers and inferred shapes only: torch is never imported."""
    import subprocess
    import sys

    gm = graphc.build(graphc.load_spec(SPECS / "mlp.yaml"), seed=0)
    save_file(dict(gm.state_dict()), str(tmp_path / "w.safetensors"))
    code = ("import sys; from graphc.cli import main; "
            f"assert main(['weights', 'plan', {str(SPECS / 'mlp.yaml')!r}, '--from', {str(tmp_path / 'w.safetensors')!r}]) == 0; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "carried" in proc.stdout


# --- torchvision ----------------------------------------------------------------------
# torchvision does not install here against torch 2.13 CPU (its wheel's C ops do not load),
# so the reference is tests/golden/torchvision_state_dicts.json: every state-dict name, shape
# and dtype of torchvision 0.28's models, written from torchvision's own model code.  Where
# torchvision imports (or GRAPHC_TORCHVISION_SRC names an unpacked torchvision source tree,
# whose pure-Python model code runs without its C ops), the outputs are compared too.
TV = json.loads((ROOT / "tests" / "golden" / "torchvision_state_dicts.json").read_text())["models"]


def _tv_reference(name: str, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape, dtype in TV[name]["tensors"]:
        if dtype == "int64":
            out[key] = torch.randint(0, 100, shape, generator=gen)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) * 0.5 + 0.5
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.05 + (0.5 if key.endswith("weight") and len(shape) == 1 else 0.0)
    return out


@pytest.mark.parametrize("name", sorted(TV))
def test_torchvision_map_carries_every_tensor(tmp_path: Path, name: str) -> None:
    """Every torchvision tensor lands, unchanged, on its node path; nothing new, nothing unused."""
    from safetensors.torch import load_file

    ref = _tv_reference(name, 3)
    torch.save(ref, tmp_path / "ref.pth")
    overrides = TV[name]["overrides"]
    map_file = MAPS / f"{name}_torchvision.yaml"
    out = _convert(tmp_path, f"{name}.yaml", tmp_path / "ref.pth", map_file, overrides)
    plan = gw.plan(SPECS / f"{name}.yaml", tmp_path / "ref.pth", map=map_file, overrides=overrides)
    assert {r.status for r in plan.rows} <= {"carried", "renamed"}
    got = load_file(str(out))
    assert len(got) == len(ref)
    for row in plan.rows:
        assert torch.equal(got[row.name], ref[row.source]), row
    gm = graphc.build(graphc.load_spec(SPECS / f"{name}.yaml", overrides), seed=0)
    from graphc.export.weights import load_weights

    load_weights(gm, out)  # strict: every key and shape


def _torchvision_models() -> Any:
    try:
        import torchvision.models as models

        return models
    except Exception:
        pass
    src = __import__("os").environ.get("GRAPHC_TORCHVISION_SRC")
    if not src:
        pytest.skip("torchvision is not importable here (see the comment above TV)")
    import sys
    import types

    pkg = types.ModuleType("torchvision")
    pkg.__path__ = [str(Path(src) / "torchvision")]
    sys.modules["torchvision"] = pkg
    import torchvision.models as models

    return models


@pytest.mark.parametrize("name", sorted(TV))
def test_torchvision_outputs_equal(tmp_path: Path, name: str) -> None:
    models = _torchvision_models()
    if name == "vit_b_16":  # the fixture's 2-layer ViT-B/16 (TV[name]["torchvision"])
        m = models.VisionTransformer(image_size=224, patch_size=16, num_layers=2, num_heads=12, hidden_dim=768, mlp_dim=3072)
    else:
        m = getattr(models, name)()
    m.eval()
    with torch.no_grad():
        for key, t in _tv_reference(name, 4).items():
            m.state_dict()[key].copy_(t)
    torch.save(m.state_dict(), tmp_path / "ref.pth")
    overrides = TV[name]["overrides"]
    gm = gw.load(graphc.load_spec(SPECS / f"{name}.yaml", overrides), tmp_path / "ref.pth", map=MAPS / f"{name}_torchvision.yaml").eval()
    x = torch.randn(2, 3, 224 if name == "vit_b_16" else 64, 224 if name == "vit_b_16" else 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(gm(x), m(x), atol=1e-4, rtol=1e-4)


def test_map_schema_file_is_in_sync(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/graphc.weights-map.schema.json (editors validate maps with it) is `graphc weights schema`."""
    main(["weights", "schema"])
    assert capsys.readouterr().out == (ROOT / "docs" / "graphc.weights-map.schema.json").read_text()


@pytest.mark.parametrize("path", sorted(MAPS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_maps_name_a_zoo_spec(path: Path) -> None:
    wmap = gw.load_map(path)
    assert (SPECS / f"{wmap.doc.spec}.yaml").is_file()


def test_export_weights_with_map_and_partial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--weights takes --map/--partial like --init: a foreign-named checkpoint exports through its map."""
    gm = graphc.build(graphc.load_spec(SPECS / "mlp.yaml"), seed=3)
    sd = gm.state_dict()
    save_file({f"net.{k}": v for k, v in sd.items() if not k.startswith("fc2.bias")}, str(tmp_path / "ck.safetensors"))
    (tmp_path / "m.yaml").write_text('graphc-weights: 1\nspec: mlp\nrules:\n  - {from: "net.{n}.{p}", to: "{n}.{p}"}\n')
    base = ["export", str(SPECS / "mlp.yaml"), "--weights", str(tmp_path / "ck.safetensors"), "-o", str(tmp_path / "m.onnx")]
    assert main([*base, "--no-verify"]) == 1  # the plain path loads strictly, names as they are
    assert main([*base, "--map", str(tmp_path / "m.yaml"), "--no-verify"]) == 1  # fc2.bias is missing
    assert "fc2.bias" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
    assert main([*base, "--map", str(tmp_path / "m.yaml"), "--partial"]) == 0
    assert "newly initialised: fc2.bias" in capsys.readouterr().err
    import onnx

    init = {t.name: t for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    w = next(t for name, t in init.items() if "fc1" in name and "weight" in name)
    assert torch.equal(torch.from_numpy(onnx.numpy_helper.to_array(w).copy()), sd["fc1.weight"])
