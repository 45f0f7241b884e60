"""CLI command of graphc.sweep (registered by graphc.cli): ``graphc sweep``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _sweep(args: argparse.Namespace) -> int:
    from graphc.sweep.api import sweep

    sweep(args.spec, args.sweep, args.output, config=args.config, trials=args.trials, timeout=args.timeout, workers=args.workers,
          storage=args.storage, resume=args.resume, sampler=args.sampler, seed=args.seed, static=not args.no_static_check,
          overrides=args.overrides)
    return 0


def register(sub: Any, add_spec_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``graphc sweep`` to the ``graphc`` parser."""
    p = sub.add_parser("sweep", help="tune hyperparameters with Optuna; invalid or over-budget configurations never train",
                       description="Sweep SPEC over the search space in --sweep FILE; see docs/sweep.md.")
    add_spec_args(p)
    p.add_argument("--sweep", required=True, metavar="SPACE.yaml", help="the search space, objective, budget and trial length")
    p.add_argument("-o", "--output", required=True, metavar="STUDY_DIR", help="study folder: trials/, trials.csv, best/, plots/")
    p.add_argument("--config", metavar="RECIPE.yaml", help="recipe file (instead of the spec's train: section)")
    p.add_argument("--trials", type=int, metavar="N", help="number of trials (default: the space's 'trials', else 20)")
    p.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes on this machine (default 1)")
    p.add_argument("--storage", metavar="URL", help="Optuna RDB storage shared by machines, e.g. postgresql://user@host/db")
    p.add_argument("--resume", action="store_true", help="continue the study in STUDY_DIR (trials of dead workers become failed)")
    p.add_argument("--sampler", choices=("tpe", "random", "grid"), help="default: the space's 'sampler', else tpe")
    p.add_argument("--seed", type=int, help="sampler seed (default: the space's 'seed', else 0)")
    p.add_argument("--no-static-check", action="store_true", help="train every sampled configuration (to measure what rejection saves)")
    p.set_defaults(handler=_sweep)
