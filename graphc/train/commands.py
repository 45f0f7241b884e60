"""CLI commands of graphc.train (registered by graphc.cli): ``graphc train``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _train(args: argparse.Namespace) -> int:
    from graphc.train.loop import train
    from graphc.weights.commands import weight_source

    r = train(args.spec, args.output, config=args.config, overrides=args.overrides, resume=args.resume,
              init=weight_source(args.init, args), quiet=args.quiet, force=args.force, nproc=args.nproc, debug=args.debug)
    best = ", ".join(f"{k} {v:.4g}" for k, v in r.best.items() if k.startswith("val_"))
    test = ", ".join(f"{k} {v:.4g}" for k, v in r.test.items())
    print(f"trained {r.steps} steps (compile: {r.compile}{', stopped early' if r.stopped_early else ''}); "
          f"best step {r.best_step}: {best}")
    if test:
        print(f"test (best weights): {test}")
    if r.unigram_loss is not None:
        print(f"unigram (token-frequency) baseline val_loss {r.unigram_loss:.4f}")
    print(f"wrote {r.run_dir}/best.safetensors, metrics.csv, curves.png, results.json")
    return 0


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of processes, got {text!r}")
    return n


def register(sub: Any, add_spec_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``graphc train`` to the ``graphc`` parser."""
    from graphc.weights.commands import add_transfer_args

    p = sub.add_parser("train", help="train a spec with its recipe (train: section or --config)",
                       description="Train SPEC; see docs/train.md. --set train.KEY=VALUE overrides the recipe.")
    add_spec_args(p)
    p.add_argument("--config", metavar="RECIPE.yaml", help="recipe file (instead of the spec's train: section)")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder: checkpoints, metrics.csv, best.safetensors")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in RUN_DIR")
    p.add_argument("--force", action="store_true",
                   help="start afresh in RUN_DIR even if it holds a run or other files (removes only a run's own files)")
    p.add_argument("--init", metavar="WEIGHTS", help="start from these weights (safetensors keyed by node paths)")
    add_transfer_args(p)  # --map, --partial for --init
    p.add_argument("--nproc", type=_positive, metavar="N",
                   help="train on N local processes (DDP or FSDP: the recipe's distributed.strategy); see docs/train.md")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=_train)
