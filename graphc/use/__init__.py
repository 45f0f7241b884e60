"""Using a trained or compiled model: ``predict``, ``evaluate``, ``generate`` (see docs/serve.md).

A *target* is either a ``graphc compile`` folder (run in onnxruntime; ``predict`` and
``generate`` then import no torch) or a spec file with ``weights=`` (run in torch).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    import importlib

    mods = {"predict": "graphc.use.predict", "evaluate": "graphc.use.evaluate", "generate": "graphc.use.generate"}
    if name in mods:
        return getattr(importlib.import_module(mods[name]), name)
    raise AttributeError(f"module 'graphc.use' has no attribute {name!r}")
