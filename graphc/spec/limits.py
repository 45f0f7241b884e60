"""Size limits of a spec: the one place that declares them, their defaults and how to raise them.

A spec is untrusted input: a ``repeat: 1000000``, a 30 MB flow list or a string param doubled
twenty times must end in one clear error, in bounded time and memory, rather than a machine
out of memory.  Each limit below is checked *before* the work it bounds (a file's size before
reading it, a repeat count before unrolling it) and its error names the limit and the
environment variable that raises it (``GRAPHC_MAX_NODES=500000 graphc check big.yaml``).

docs/spec.md ("Limits") lists the same table for users; ``tests/test_hostile_spec.py`` pins
each error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from graphc.errors import Pos, SpecError


@dataclass(frozen=True)
class Limit:
    """One size limit: its default, the variable that overrides it, and what it counts."""

    env: str
    default: int
    what: str  # "nodes after expansion": the unit, for messages

    @property
    def value(self) -> int:
        """The limit in force: the environment variable when set to a positive integer.

        Read on each use (cheap) so a test or a long-lived process can change it; an unusable
        value is a usage error rather than a silent fallback to the default.
        """
        text = os.environ.get(self.env)
        if text is None or not text.strip():
            return self.default
        try:
            value = int(text.strip().replace("_", ""))
        except ValueError:
            value = 0
        if value < 1:
            raise SpecError(f"{self.env}={text!r}: expected a positive integer")
        return value

    def exceeded(self, message: str, pos: Pos | None = None) -> SpecError:
        """``MESSAGE: over the limit of N WHAT (set ENV to raise it)``."""
        return SpecError(f"{message}: over the limit of {self.value:,} {self.what} (set {self.env} to raise it)", pos)


MAX_NODES = Limit("GRAPHC_MAX_NODES", 100_000, "nodes after expansion")
MAX_REPEAT = Limit("GRAPHC_MAX_REPEAT", 10_000, "copies per block call")
MAX_STRING = Limit("GRAPHC_MAX_STRING", 1 << 20, "characters per text value")
MAX_TEXT = Limit("GRAPHC_MAX_TEXT", 64 << 20, "characters of text made by expressions per spec")
MAX_FILE_BYTES = Limit("GRAPHC_MAX_FILE_BYTES", 16 << 20, "bytes per file")
MAX_YAML_VALUES = Limit("GRAPHC_MAX_YAML_VALUES", 200_000, "YAML values per file")

ALL = (MAX_NODES, MAX_REPEAT, MAX_STRING, MAX_TEXT, MAX_FILE_BYTES, MAX_YAML_VALUES)
