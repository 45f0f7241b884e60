"""Hyperparameter sweeps on Optuna, with configurations that cannot work rejected statically.

``graphc.sweep(spec, space, study_dir, ...)`` is the entry point of ``graphc sweep`` (see
docs/sweep.md and :func:`graphc.sweep.api.sweep`).  The name is both this package and the
function, so the package is callable.  The space and the static check import neither torch
nor Optuna; trials train in child processes.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    """``graphc.sweep(...)`` calls :func:`graphc.sweep.api.sweep`; ``graphc.sweep.api`` etc. stay modules."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from graphc.sweep.api import sweep

        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
