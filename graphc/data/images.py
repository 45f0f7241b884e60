"""Image folders: ``root/<class>/*.png`` (or ``root/train|val|test/<class>/...``) as a Source.

Images are decoded with Pillow and transformed with Pillow + numpy, not torchvision: its C
ops (``decode_image``, ``transforms.v2``) do not load against the torch build in use here,
and Pillow is the decoder torchvision itself falls back to.  The transforms follow
torchvision's definitions (``Resize`` with an int resizes the shorter side,
``RandomResizedCrop`` draws scale and ratio the same way, ``Normalize`` is ``(x - mean) / std``)
so a recipe means what a torchvision user expects.

Every image is decoded once while the folder is prepared, before the run folder is touched:
a corrupt or truncated file, an empty class folder or a colour mode the recipe refuses is a
one-line error naming the file, never a crash in a DataLoader worker at step 5000.  This
module never imports torch (DataLoader workers and ``graphc check`` stay light).
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from graphc.data.fingerprint import SMALL_FILE, fingerprint_entries, partial_entry, small_entry
from graphc.data.source import Example, Prepared
from graphc.errors import DataError, Pos

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "val", "test")
MODES = {"rgb": "RGB", "grayscale": "L"}  # recipe colour -> Pillow mode


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Size = PositiveInt | tuple[PositiveInt, PositiveInt]


class Resize(_Strict):
    """Resize to ``[height, width]``; an int resizes the shorter side, keeping the aspect ratio."""

    type: Literal["resize"]
    size: Size


class CenterCrop(_Strict):
    """The central ``[height, width]`` (an int: a square); zero-padded where the image is smaller."""

    type: Literal["center_crop"]
    size: Size


class RandomResizedCrop(_Strict):
    """A random part (``scale`` of the area, aspect ``ratio``) resized to ``size`` (train only)."""

    type: Literal["random_resized_crop"]
    size: Size
    scale: tuple[PositiveFloat, PositiveFloat] = (0.08, 1.0)
    ratio: tuple[PositiveFloat, PositiveFloat] = (3 / 4, 4 / 3)

    @model_validator(mode="after")
    def _ranges(self) -> RandomResizedCrop:
        if self.scale[0] > self.scale[1] or self.scale[1] > 1.0:
            raise ValueError(f"scale must be [low, high] with low <= high <= 1, got {list(self.scale)}")
        if self.ratio[0] > self.ratio[1]:
            raise ValueError(f"ratio must be [low, high] with low <= high, got {list(self.ratio)}")
        return self


class HorizontalFlip(_Strict):
    """Mirror left-right with probability ``p`` (train only)."""

    type: Literal["horizontal_flip"]
    p: float = Field(0.5, ge=0.0, le=1.0)


class Normalize(_Strict):
    """``(x - mean) / std`` per channel on pixel values in [0, 1]; must come last."""

    type: Literal["normalize"]
    mean: list[float] = Field(min_length=1, max_length=3)
    std: list[PositiveFloat] = Field(min_length=1, max_length=3)


Transform = Annotated[Resize | CenterCrop | RandomResizedCrop | HorizontalFlip | Normalize, Field(discriminator="type")]
RANDOM = (RandomResizedCrop, HorizontalFlip)


class ImagesCfg(_Strict):
    """An image folder and the transforms of its train and eval examples."""

    root: str = Field(description="the folder (relative paths: from the recipe's folder)")
    color: Literal["rgb", "grayscale"] = Field("rgb", description="channels of the model input: rgb = 3, grayscale = 1")
    convert: bool = Field(True, description="convert images of another colour mode; false: such an image is an error")
    strict: bool = Field(False, description="a non-image file in a class folder is an error (default: skipped with a warning)")
    train_transforms: list[Transform] = Field([], description="applied in order to training examples")
    eval_transforms: list[Transform] = Field([], description="applied in order to val/test examples (no random ones)")

    @model_validator(mode="after")
    def _pipelines(self) -> ImagesCfg:
        channels = 3 if self.color == "rgb" else 1
        for name, steps in (("train_transforms", self.train_transforms), ("eval_transforms", self.eval_transforms)):
            for i, t in enumerate(steps):
                if isinstance(t, Normalize):
                    if i != len(steps) - 1:
                        raise ValueError(f"{name}: normalize must be the last transform (it works on the pixel array)")
                    if len(t.mean) not in (1, channels) or len(t.std) not in (1, channels):
                        raise ValueError(f"{name}: normalize needs 1 or {channels} mean/std values for color {self.color}, "
                                         f"got {len(t.mean)} and {len(t.std)}")
                if name == "eval_transforms" and isinstance(t, RANDOM):
                    raise ValueError(f"eval_transforms: {t.type} is random; evaluation must be deterministic (use resize/center_crop)")
        return self


class Where(Protocol):
    """The recipe's positions (graphc.train.recipe.LoadedRecipe) for errors that point at it."""

    def pos(self, *path: str | int) -> Pos: ...
    def where(self, *path: str | int) -> str: ...


# --- the source ------------------------------------------------------------------------------


@dataclass
class ImageSource:
    """One split of an image folder: example ``i`` is ``{key: float32 [C, H, W], target: int64}``.

    Picklable (plain fields) for DataLoader workers.  Random transforms draw from
    ``np.random.default_rng((seed, epoch, i))``, so an example is a pure function of
    (seed, epoch, index) in whichever process decodes it.
    """

    files: list[str]
    labels: np.ndarray
    key: str
    target: str
    mode: str
    transforms: tuple[Any, ...]
    train: bool
    seed: int
    epoch: int = 0

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def column(self, name: str) -> np.ndarray | None:
        """Every example's ``name`` without decoding an image (the labels), else None."""
        return self.labels if name == self.target else None

    def __getitem__(self, i: int) -> Example:
        from PIL import Image

        rng = np.random.default_rng((self.seed % 2**32, self.epoch, i)) if self.train else None
        path = self.files[i]
        try:
            with Image.open(path) as im:
                x = apply_transforms(im.convert(self.mode), self.transforms, rng)
        except (OSError, ValueError) as e:  # the file changed since the folder was prepared
            raise DataError(f"{path}: cannot decode image: {_first_line(e)}") from None
        return {self.key: x, self.target: np.asarray(self.labels[i], dtype=np.int64)}


def apply_transforms(im: Any, steps: Sequence[Any], rng: np.random.Generator | None) -> np.ndarray:
    """``im`` (a Pillow image in its final mode) through ``steps``: a float32 [C, H, W] array."""
    from PIL import Image

    for t in steps:
        if isinstance(t, Resize):
            im = im.resize(_resize_to(im.size, t.size), Image.Resampling.BILINEAR)
        elif isinstance(t, CenterCrop):
            h, w = _hw(t.size)
            top, left = round((im.height - h) / 2), round((im.width - w) / 2)
            im = im.crop((left, top, left + w, top + h))  # Pillow fills outside the image with zeros
        elif isinstance(t, RandomResizedCrop):
            top, left, h, w = _rrc_box(im.height, im.width, t.scale, t.ratio, rng)
            oh, ow = _hw(t.size)
            im = im.resize((ow, oh), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        elif isinstance(t, HorizontalFlip) and rng is not None and rng.random() < t.p:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    x = np.asarray(im, dtype=np.float32) / 255.0
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    if steps and isinstance(steps[-1], Normalize):
        mean = np.asarray(steps[-1].mean, dtype=np.float32)[:, None, None]
        std = np.asarray(steps[-1].std, dtype=np.float32)[:, None, None]
        x = (x - mean) / std
    return np.ascontiguousarray(x)


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def _resize_to(wh: tuple[int, int], size: int | tuple[int, int]) -> tuple[int, int]:
    """Pillow's (width, height) for torchvision's Resize(size)."""
    if not isinstance(size, int):
        return size[1], size[0]
    w, h = wh
    if w <= h:
        return size, max(1, int(size * h / w))
    return max(1, int(size * w / h)), size


def _rrc_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.Generator | None) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (top, left, h, w), ten tries then the centre."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10 if rng is not None else 0):
        target = area * rng.uniform(scale[0], scale[1])  # type: ignore[union-attr]
        aspect = math.exp(rng.uniform(*log_ratio))  # type: ignore[union-attr]
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w  # type: ignore[union-attr]
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _fixed_size(steps: Sequence[Any]) -> bool:
    """Whether ``steps`` give every image the same size (else the folder's images must agree)."""
    return any(isinstance(t, CenterCrop | RandomResizedCrop) or (isinstance(t, Resize) and not isinstance(t.size, int)) for t in steps)


def _first_line(e: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):  # its own text names a BytesIO object, not the file
        return "not a format Pillow recognises (empty, or not an image)"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --- scanning the folder ------------------------------------------------------------------------


@dataclass
class _Scan:
    """What one pass over the folder found."""

    classes: list[str]
    parts: dict[str, list[tuple[str, int]]]  # split (or "all") -> (file, class id)
    skipped: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)  # for the fingerprint
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


def _class_dirs(folder: Path) -> list[Path]:
    try:
        return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as e:
        raise DataError(f"{folder}: cannot list the folder: {e.strerror}") from None


def _files(class_dir: Path, cfg: ImagesCfg, scan: _Scan, pos: Pos) -> list[Path]:
    """The image files of one class folder; other files are skipped (or refused when strict)."""
    out = []
    for p in sorted(class_dir.iterdir(), key=lambda p: p.name):
        if p.name.startswith(".") or not p.is_file():
            continue  # hidden files (.DS_Store) and sub-folders are not examples
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            if cfg.strict:
                raise DataError(f"{p}: not an image file (extensions: {', '.join(IMAGE_EXTENSIONS)}); "
                                "remove it, or set data.images.strict: false to skip such files", pos)
            scan.skipped.append(str(p))
            continue
        out.append(p)
    if not out:
        raise DataError(f"{class_dir}: class folder '{class_dir.name}' has no images ({', '.join(IMAGE_EXTENSIONS)})", pos)
    return out


def _check_image(path: Path, root: Path, cfg: ImagesCfg, scan: _Scan, pos: Pos) -> None:
    """Decode ``path`` once (full decode: truncation shows only there) and fingerprint it."""
    from PIL import Image

    try:
        size = path.stat().st_size
        data = path.read_bytes() if size <= SMALL_FILE else None
        rel = str(path.relative_to(root))
        scan.entries.append(small_entry(rel, data) if data is not None else partial_entry(rel, path, size))
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im.load()
            mode, wh = im.mode, im.size
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error ... on bad files
        raise DataError(f"{path}: cannot decode image: {_first_line(e)}", pos) from None
    want = MODES[cfg.color]
    if mode != want and not cfg.convert:
        raise DataError(f"{path}: image is {_describe_mode(mode)} (mode {mode}) but data.images.color is {cfg.color}; "
                        "set data.images.convert: true to convert such images", pos)
    scan.sizes[str(path)] = wh


def _describe_mode(mode: str) -> str:
    return "grayscale" if mode in ("1", "L", "LA", "I", "I;16", "F") else "colour"


def _scan(root: Path, cfg: ImagesCfg, where: Where) -> _Scan:
    pos = where.pos("data", "images", "root")
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (data.images.root)", pos)
    split_layout = (root / "train").is_dir()
    top = root / "train" if split_layout else root
    class_dirs = _class_dirs(top)
    if not class_dirs:
        raise DataError(f"{top}: no class folders (expected {top}/<class>/*.png ...)", pos)
    scan = _Scan(classes=[p.name for p in class_dirs], parts={})
    ids = {c: i for i, c in enumerate(scan.classes)}
    for part in SPLITS if split_layout else ("all",):
        folder = root / part if split_layout else root
        if not folder.is_dir():
            scan.parts[part] = []
            continue
        rows: list[tuple[str, int]] = []
        for d in _class_dirs(folder):
            if d.name not in ids:
                raise DataError(f"{d}: class '{d.name}' has no training folder {top / d.name}", pos)
            for f in _files(d, cfg, scan, pos):
                _check_image(f, root, cfg, scan, pos)
                rows.append((str(f), ids[d.name]))
        scan.parts[part] = rows
    return scan


def _same_size(rows: list[tuple[str, int]], scan: _Scan, steps: Sequence[Any], name: str, pos: Pos) -> None:
    if _fixed_size(steps) or not rows:
        return
    first = scan.sizes[rows[0][0]]
    for f, _ in rows:
        if scan.sizes[f] != first:
            raise DataError(f"{f}: image is {scan.sizes[f][0]}x{scan.sizes[f][1]} but {rows[0][0]} is {first[0]}x{first[1]}; "
                            f"batches need one size: add a resize [H, W] or center_crop to data.images.{name}", pos)


def _seeded_split(rows: list[tuple[str, int]], fractions: tuple[float, float, float], seed: int) -> list[list[tuple[str, int]]]:
    """Train/val/test by one seeded permutation (the same rule as in-memory sets)."""
    n = len(rows)
    perm = np.random.default_rng(seed % 2**32).permutation(n)
    n_train = max(1, round(fractions[0] * n))
    n_val = round(fractions[1] * n)
    cuts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    return [[rows[i] for i in sorted(c)] for c in cuts]


def prepare(cfg: ImagesCfg, base: Path, inputs: dict[str, Any], split: tuple[float, float, float], seed: int,
            where: Where) -> Prepared:
    """Scan, check and split the image folder of ``cfg``; class names go to ``classes.json``.

    Raises:
        DataError: the folder is missing, a class folder is empty, an image is corrupt or in a
            refused colour mode, a non-image file under ``strict``: one line naming the file.
    """
    root = Path(os.path.expanduser(cfg.root))
    root = root if root.is_absolute() else base / root
    scan = _scan(root, cfg, where)
    pos = where.pos("data", "images")
    if "all" in scan.parts:
        train, val, test = _seeded_split(scan.parts["all"], split, seed)
    else:
        train, val, test = scan.parts["train"], scan.parts["val"], scan.parts["test"]
    _same_size(train, scan, cfg.train_transforms, "train_transforms", pos)
    _same_size(val + test, scan, cfg.eval_transforms, "eval_transforms", pos)
    if scan.skipped:
        print(f"warning: skipped {len(scan.skipped)} non-image file(s) in class folders (first: {scan.skipped[0]}); "
              "set data.images.strict: true to make this an error", file=sys.stderr)
    key = next(iter(inputs)) if len(inputs) == 1 else "image"
    mode = MODES[cfg.color]

    def source(rows: list[tuple[str, int]], is_train: bool) -> ImageSource:
        steps = tuple(cfg.train_transforms if is_train else cfg.eval_transforms)
        return ImageSource([f for f, _ in rows], np.asarray([c for _, c in rows], dtype=np.int64), key, "label", mode, steps,
                           is_train, seed)

    fingerprint = {"kind": "images", "root": str(root), "layout": "split folders" if "all" not in scan.parts else "class folders",
                   "classes": scan.classes, **fingerprint_entries(scan.entries)}
    return Prepared(source(train, True), source(val, False), source(test, False),
                    artifacts={"classes.json": (json.dumps(scan.classes, indent=2) + "\n").encode()},
                    fingerprint=fingerprint)
