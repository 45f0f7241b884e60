"""Offline demo tables for docs/data.md and specs/train/wine_table.yaml (no download).

``python -m graphc.data.demos out/data/wine.csv`` writes scikit-learn's wine set (178 wines,
13 measurements, 3 cultivars) as a table with what real tables have and the built-in arrays
lack: string class labels, a categorical column (``region``, drawn with cultivar-dependent
odds so it carries signal), and empty cells (about 5% of ``magnesium``).  The suffix picks
the format: .csv, .parquet or .jsonl.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CULTIVARS = ("barolo", "grignolino", "barbera")
REGIONS = ("north", "south", "east", "west")


def wine_table(path: str | Path, seed: int = 0) -> Path:
    """Write the wine table to ``path`` (.csv / .parquet / .jsonl) and return the path."""
    import pyarrow as pa
    from sklearn.datasets import load_wine

    rng = np.random.default_rng(seed)
    bunch = load_wine()
    cols: dict[str, object] = {name: bunch.data[:, j].round(4) for j, name in enumerate(bunch.feature_names)}
    odds = np.array([[0.6, 0.2, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.1, 0.1, 0.2, 0.6]])
    cols["region"] = [REGIONS[rng.choice(4, p=odds[y])] for y in bunch.target]
    magnesium = np.asarray(cols["magnesium"], dtype=float)
    cols["magnesium"] = pa.array(magnesium, mask=rng.random(len(magnesium)) < 0.05)
    cols["cultivar"] = [CULTIVARS[y] for y in bunch.target]
    return write_table(pa.table(cols), Path(path))


def write_table(table: object, path: Path) -> Path:
    """``table`` (a pyarrow Table) as CSV, Parquet or JSONL by ``path``'s suffix."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    assert isinstance(table, pa.Table)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        pcsv.write_csv(table, path)
    elif suffix == ".parquet":
        pq.write_table(table, path)
    elif suffix == ".jsonl":
        import json

        with path.open("w", encoding="utf-8") as f:
            for row in table.to_pylist():
                f.write(json.dumps(row) + "\n")
    else:
        raise ValueError(f"{path}: use .csv, .parquet or .jsonl")
    return path


if __name__ == "__main__":
    out = wine_table(sys.argv[1] if len(sys.argv) > 1 else "out/data/wine.csv")
    print(f"wrote {out}")
