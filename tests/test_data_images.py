"""Image folders: layout, transforms, the rendered-digits recipe, and bad data (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli
from hostile import assert_clean, assert_unchanged, run_guarded, snapshot

from graphc.data import images as gi
from graphc.errors import DataError, Pos

TINY = """\
graphc: 1
name: tiny_images
inputs:
  image: {{shape: [B, {channels}, 8, 8], example: {{B: 2}}}}
nodes:
  flat: {{op: flatten, in: image}}
  fc: {{op: linear, out: 3}}
outputs: {{logits: fc}}
train:
  data:
    images: {{root: imgs, color: {color}, convert: {convert}, strict: {strict}}}
    split: [0.5, 0.25, 0.25]
  loss: {{type: cross_entropy, output: logits, target: label}}
  metrics: [accuracy]
  steps: 4
  batch_size: 2
  eval_every: 2
"""


def _png(path: Path, value: int, mode: str = "L", size: tuple[int, int] = (8, 8)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color: int | tuple[int, int, int] = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, size, color).save(path)
    return path


def _folder(root: Path, classes: tuple[str, ...] = ("a", "b", "c"), per: int = 4, mode: str = "L") -> Path:
    for c, name in enumerate(classes):
        for i in range(per):
            _png(root / name / f"{i}.png", 40 * c + 10 * i, mode)
    return root


def _spec(tmp: Path, channels: int = 1, color: str = "grayscale", convert: str = "true", strict: str = "false") -> Path:
    p = tmp / "spec.yaml"
    p.write_text(TINY.format(channels=channels, color=color, convert=convert, strict=strict))
    return p


class _Where:
    def pos(self, *path: str | int) -> Pos:
        return Pos("recipe.yaml", 3, 5)

    def where(self, *path: str | int) -> str:
        return ".".join(map(str, ("train", *path)))


def _prepare(root: Path, **cfg: object) -> gi.Prepared:
    c = gi.ImagesCfg.model_validate({"root": str(root), **cfg})
    return gi.prepare(c, root.parent, {"image": None}, (0.5, 0.25, 0.25), 7, _Where())


# --- layout -----------------------------------------------------------------------------------


def test_class_folders_sorted_and_seeded_split(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", classes=("zebra", "ant", "moth"))
    p = _prepare(root, color="grayscale")
    assert json.loads(p.artifacts["classes.json"]) == ["ant", "moth", "zebra"]
    assert (len(p.train), len(p.val), len(p.test)) == (6, 3, 3)
    names = {f for s in (p.train, p.val, p.test) for f in s.files}  # type: ignore[attr-defined]
    assert len(names) == 12  # disjoint and complete
    again = _prepare(root, color="grayscale")
    assert again.train.files == p.train.files  # type: ignore[attr-defined]
    ex = p.train[0]
    assert ex["image"].shape == (1, 8, 8) and ex["image"].dtype == np.float32 and ex["label"].dtype == np.int64
    label = int(ex["label"])
    assert Path(p.train.files[0]).parent.name == ["ant", "moth", "zebra"][label]  # type: ignore[attr-defined]
    assert p.fingerprint["files"] == 12 and len(p.fingerprint["digest"]) == 64


def test_split_folders_used_when_present(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _folder(root / "train", per=3)
    _folder(root / "val", per=1)
    _folder(root / "test", classes=("a", "b"), per=2)
    p = _prepare(root, color="grayscale")
    assert (len(p.train), len(p.val), len(p.test)) == (9, 3, 4)
    assert all("/test/" in f for f in p.test.files)  # type: ignore[attr-defined]
    assert p.fingerprint["layout"] == "split folders"


def test_class_only_in_val_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _folder(root / "train", per=2)
    _png(root / "val" / "d" / "0.png", 3)
    with pytest.raises(DataError, match=r"val/d: class 'd' has no training folder"):
        _prepare(root, color="grayscale")


def test_non_image_file_skipped_with_one_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path / "imgs")
    (root / "a" / "notes.txt").write_text("not a picture")
    (root / "b" / ".DS_Store").write_bytes(b"\0\1")
    p = _prepare(root, color="grayscale")
    assert sum(len(s) for s in (p.train, p.val, p.test)) == 12
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "skipped 1 non-image file(s)" in err and "a/notes.txt" in err


def test_grayscale_converted_to_rgb_when_declared(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", per=2)
    _png(root / "a" / "rgb.png", 90, mode="RGB")
    p = _prepare(root, color="rgb")
    shapes = {p.train[i]["image"].shape for i in range(len(p.train))}
    assert shapes == {(3, 8, 8)}
    gray = _prepare(root, color="grayscale")
    assert {gray.train[i]["image"].shape for i in range(len(gray.train))} == {(1, 8, 8)}


# --- transforms -------------------------------------------------------------------------------


def _t(*steps: dict[str, object]) -> tuple[object, ...]:
    cfg = gi.ImagesCfg.model_validate({"root": ".", "train_transforms": list(steps)})
    return tuple(cfg.train_transforms)


def test_transforms_follow_torchvision_definitions() -> None:
    from PIL import Image

    arr = np.arange(20 * 40, dtype=np.uint8).reshape(20, 40)  # H=20, W=40
    im = Image.fromarray(arr, mode="L")
    assert gi.apply_transforms(im, _t({"type": "resize", "size": 10}), None).shape == (1, 10, 20)  # shorter side -> 10
    assert gi.apply_transforms(im, _t({"type": "resize", "size": [5, 7]}), None).shape == (1, 5, 7)
    crop = gi.apply_transforms(im, _t({"type": "center_crop", "size": 4}), None)
    assert crop.shape == (1, 4, 4)
    np.testing.assert_allclose(crop[0], arr[8:12, 18:22] / 255.0, rtol=1e-6)
    flip = gi.apply_transforms(im, _t({"type": "horizontal_flip", "p": 1.0}), np.random.default_rng(0))
    np.testing.assert_allclose(flip[0], arr[:, ::-1] / 255.0, rtol=1e-6)
    norm = gi.apply_transforms(im, _t({"type": "normalize", "mean": [0.5], "std": [0.25]}), None)
    np.testing.assert_allclose(norm[0], (arr / 255.0 - 0.5) / 0.25, atol=1e-6)


def test_random_resized_crop_is_a_function_of_seed_epoch_index(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", per=4)
    for c in "abc":  # textured images, so different crops give different pixels
        for i in range(4):
            from PIL import Image

            Image.fromarray(np.random.default_rng(i).integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(root / c / f"{i}.png")
    steps = [{"type": "random_resized_crop", "size": 6, "scale": [0.3, 1.0]}, {"type": "horizontal_flip"}]
    p = _prepare(root, color="grayscale", train_transforms=steps)
    q = _prepare(root, color="grayscale", train_transforms=steps)
    first = p.train[1]["image"]
    assert first.shape == (1, 6, 6)
    np.testing.assert_array_equal(first, q.train[1]["image"])  # another process / instance: the same draw
    p.train.set_epoch(1)  # type: ignore[attr-defined]
    later = [p.train[1]["image"] for _ in range(2)]
    np.testing.assert_array_equal(later[0], later[1])
    assert not np.array_equal(first, later[0])
    assert p.val[0]["image"].shape == (1, 8, 8)  # eval examples get only eval_transforms


@pytest.mark.parametrize(("cfg", "message"), [
    ({"train_transforms": [{"type": "normalize", "mean": [0.5], "std": [0.5]}, {"type": "resize", "size": 4}]},
     "normalize must be the last transform"),
    ({"eval_transforms": [{"type": "horizontal_flip"}]}, "horizontal_flip is random"),
    ({"color": "rgb", "eval_transforms": [{"type": "normalize", "mean": [0.1, 0.2], "std": [1.0]}]}, "needs 1 or 3 mean/std"),
    ({"train_transforms": [{"type": "random_resized_crop", "size": 4, "scale": [0.9, 0.1]}]}, "low <= high"),
])
def test_transform_mistakes_are_refused(cfg: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        gi.ImagesCfg.model_validate({"root": ".", **cfg})


@pytest.mark.parametrize(("edit", "line", "message"), [
    (", colour: rgb}", 11, "train.data.images.colour: unknown field 'colour' (did you mean 'color'?)"),
    ("}\n    dataset: digits", 11, "give exactly one data source: dataset, images, table, text (got dataset, images)"),
    (", train_transforms: [{type: resise, size: 4}]}", 11, "resise"),
])
def test_recipe_errors_are_positioned(tmp_path: Path, edit: str, line: int, message: str) -> None:
    _folder(tmp_path / "imgs")
    spec = _spec(tmp_path)
    spec.write_text(spec.read_text().replace("strict: false}", "strict: false" + edit))
    r = run_cli("train", str(spec), "-o", str(tmp_path / "run"))
    assert r.code == 1 and "Traceback" not in r.err
    assert f"{spec}:{line}:" in r.err and message in r.err, r.err
    assert not (tmp_path / "run").exists()


# --- bad data: one line naming the file, exit 1, nothing written ---------------------------------


def _corrupt(root: Path) -> str:
    (root / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return "b/bad.png: cannot decode image"


def _truncated(root: Path) -> str:
    from PIL import Image

    p = root / "a" / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), mode="L").save(p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return "a/cut.png: cannot decode image"


def _non_image_strict(root: Path) -> str:
    (root / "c" / "readme.txt").write_text("hello")
    return "c/readme.txt: not an image file"


def _empty_class(root: Path) -> str:
    (root / "d").mkdir()
    return "imgs/d: class folder 'd' has no images"


def _rgb_refused(root: Path) -> str:
    _png(root / "a" / "color.png", 200, mode="RGB")
    return "a/color.png: image is colour (mode RGB) but data.images.color is grayscale"


def _gray_refused(root: Path) -> str:
    return "image is grayscale (mode L) but data.images.color is rgb"


BAD = {
    "corrupt": (_corrupt, {}),
    "truncated": (_truncated, {}),
    "non_image_strict": (_non_image_strict, {"strict": "true"}),
    "empty_class": (_empty_class, {}),
    "rgb_where_grayscale_declared": (_rgb_refused, {"convert": "false"}),
    "grayscale_where_rgb_declared": (_gray_refused, {"convert": "false", "color": "rgb", "channels": 3}),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_image_folder(tmp_path: Path, case: str) -> None:
    make, opts = BAD[case]
    root = _folder(tmp_path / "imgs")
    expected = make(root)
    spec = _spec(tmp_path, **opts)  # type: ignore[arg-type]
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    r = run_guarded("train", str(spec), "-o", str(run), "--force", cwd=tmp_path, torch=True)
    assert_clean(r, contains=expected)
    assert len(r.error_lines()) == 1 and r.error_lines()[0].startswith(f"{spec}:")
    assert_unchanged(before, snapshot(tmp_path))


# --- the offline recipe: rendered digits -------------------------------------------------------


@pytest.mark.slow
def test_rendered_digits_png_recipe_reaches_95_percent(tmp_path: Path) -> None:
    from graphc.data.demo import render_digits

    root = render_digits(tmp_path / "digits_png")
    assert len(list(root.glob("*/*.png"))) == 1797
    run = tmp_path / "run"
    r = run_cli("train", str(ROOT / "specs" / "cifar_simplecnn.yaml"), "--config", str(ROOT / "specs" / "train" / "digits_png.yaml"),
                "--set", f"train.data.images.root={root}", "-o", str(run), "-q")
    assert r.code == 0, r.err
    result = json.loads((run / "results.json").read_text())
    assert result["test"]["test_accuracy"] >= 0.95, result
    assert json.loads((run / "classes.json").read_text()) == [str(d) for d in range(10)]
    manifest = json.loads((run / "manifest.json").read_text())
    assert {"config.yaml", "spec.yaml", "data.json", "classes.json"} <= set(manifest["files"])
    assert json.loads((run / "data.json").read_text())["files"] == 1797


def test_sources_and_recipe_stay_torch_free() -> None:
    """DataLoader workers and `graphc check` import these: no torch (nor Pillow until decoding)."""
    import subprocess
    import sys

    code = ("import sys, graphc.data.images, graphc.data.fingerprint, graphc.train.recipe; "
            "print(sorted(m for m in ('torch', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]", out.stderr


def test_fingerprint_changes_are_described() -> None:
    from graphc.data.fingerprint import changes, fingerprint_entries, small_entry

    old = fingerprint_entries([small_entry("a/1.png", b"x"), small_entry("a/2.png", b"y")])
    assert changes(old, old) is None
    new = fingerprint_entries([small_entry("a/1.png", b"x!"), small_entry("b/3.png", b"z")])
    assert changes(old, new) == "1 file(s) added, 1 file(s) removed, 1 file(s) changed"
    assert changes({"kind": "dataset", "digest": "1"}, {"kind": "images", "digest": "1"}) == "the data source changed from dataset to images"


def test_image_run_trains_and_evaluates_through_the_same_source(tmp_path: Path) -> None:
    """A small image-folder run end to end in-process, then `graphc evaluate` on its test split."""
    _folder(tmp_path / "imgs", per=4)
    spec = _spec(tmp_path)
    run = tmp_path / "run"
    r = run_cli("train", str(spec), "-o", str(run), "-q")
    assert r.code == 0, r.err
    assert json.loads((run / "classes.json").read_text()) == ["a", "b", "c"]
    from graphc.use.evaluate import evaluate

    res = evaluate(str(spec), weights=str(run / "best.safetensors"))
    assert res["examples"] == 3.0 and 0.0 <= res["accuracy"] <= 1.0
