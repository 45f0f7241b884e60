"""An image folder to train on offline: scikit-learn's digits rendered as PNG files.

    python -m graphc.data.demo out/digits_png          # out/digits_png/<0..9>/<index>.png, 32x32

The 1797 8x8 digits (intensities 0..16) are scaled to 0..255 and resized to 32x32 with
Pillow's bilinear filter, one grayscale PNG per example in a folder per class.  The folder is
assembled under a temporary name and renamed into place, and only a missing or empty folder
is written: nothing of the user's is overwritten.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from graphc.errors import DataError


def render_digits(out: str | Path, size: int = 32) -> Path:
    """Write the digits as ``out/<class>/<index>.png`` (grayscale ``size`` x ``size``); returns ``out``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty folder; choose another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    bunch = load_digits()
    pixels = np.clip(bunch.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for i, (img, label) in enumerate(zip(pixels, bunch.target, strict=True)):
            folder = tmp / str(int(label))
            folder.mkdir(exist_ok=True)
            Image.fromarray(img, mode="L").resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{i:04d}.png")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m graphc.data.demo OUT_FOLDER", file=sys.stderr)
        return 2
    try:
        path = render_digits(argv[0])
    except DataError as e:
        print(f"graphc: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote 1797 PNG files (32x32, 10 class folders) to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
