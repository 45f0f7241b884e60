"""A run's data fingerprint: which files (or arrays) it trained on, so a resume can tell.

Small files are hashed whole; a file over :data:`SMALL_FILE` by its size and the hashes of its
first and last MiB (reading a 50 GB corpus at every start would cost more than the check is
worth).  The ``digest`` over all entries is what two fingerprints are compared by; at most
:data:`LISTED` entries are kept in ``data.json`` itself so the file stays readable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

SMALL_FILE = 1 << 20  # bytes: files up to this size are hashed whole
LISTED = 2000  # entries written out in full


def small_entry(rel: str, data: bytes) -> dict[str, Any]:
    return {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def partial_entry(rel: str, path: Path, size: int) -> dict[str, Any]:
    """A large file: its size and a hash of its first and last MiB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(SMALL_FILE))
        f.seek(max(0, size - SMALL_FILE))
        h.update(f.read(SMALL_FILE))
    return {"path": rel, "size": size, "head_tail_sha256": h.hexdigest()}


def file_entries(paths: Iterable[Path], root: Path | None = None) -> list[dict[str, Any]]:
    """One entry per file (path relative to ``root`` when given)."""
    out = []
    for p in paths:
        size = p.stat().st_size
        rel = str(p.relative_to(root)) if root is not None else str(p)
        out.append(small_entry(rel, p.read_bytes()) if size <= SMALL_FILE else partial_entry(rel, p, size))
    return out


def fingerprint_entries(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """``files``, ``bytes``, ``digest`` and the first :data:`LISTED` entries, sorted by path."""
    entries = sorted(entries, key=lambda e: e["path"])
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    out: dict[str, Any] = {"files": len(entries), "bytes": sum(e["size"] for e in entries), "digest": digest,
                           "entries": entries[:LISTED]}
    if len(entries) > LISTED:
        out["entries_left_out"] = len(entries) - LISTED
    return out


def fingerprint_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """In-memory data: names, shapes, dtypes and a hash of the bytes of every array."""
    h = hashlib.sha256()
    shapes = {}
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        shapes[name] = {"shape": list(a.shape), "dtype": str(a.dtype)}
        h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return {"arrays": shapes, "digest": h.hexdigest()}


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """None when the two fingerprints agree, else a short account of what differs."""
    if old.get("digest") == new.get("digest") and old.get("kind") == new.get("kind"):
        return None
    if old.get("kind") != new.get("kind"):
        return f"the data source changed from {old.get('kind')} to {new.get('kind')}"
    before = {e["path"]: e for e in old.get("entries", [])}
    after = {e["path"]: e for e in new.get("entries", [])}
    if before or after:
        added = len(after.keys() - before.keys())
        removed = len(before.keys() - after.keys())
        changed = sum(1 for k in before.keys() & after.keys() if before[k] != after[k])
        parts = [f"{n} file(s) {what}" for n, what in ((added, "added"), (removed, "removed"), (changed, "changed")) if n]
        if parts:
            return ", ".join(parts)
    return "its content hash differs"
