"""CLI commands of graphc.train (registered by graphc.cli)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add this package's subcommands to the ``graphc`` parser."""
    _ = (sub, argparse)
