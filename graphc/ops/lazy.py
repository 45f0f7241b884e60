"""Lazy handles on torch for op lowerings.

Op definitions live in modules that ``graphc check`` imports, and ``spec/`` and ``graph/``
must stay torch-free (checking stays fast).  Lowerings therefore reach torch through these
handles, which import it on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


torch: Any = _LazyModule("torch")
nn: Any = _LazyModule("torch.nn")
F: Any = _LazyModule("torch.nn.functional")
rt: Any = _LazyModule("graphc.lower.runtime")
