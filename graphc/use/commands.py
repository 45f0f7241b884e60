"""CLI commands of graphc.use and graphc.serve (registered by graphc.cli):
``graphc predict``, ``graphc evaluate``, ``graphc generate``, ``graphc serve``.

``predict``, ``generate`` and ``serve`` on a compile folder import no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _warn_random_init(args: argparse.Namespace) -> None:
    if Path(args.target).is_file() and args.weights is None:
        print(f"warning: {args.target}: no --weights given; running the seeded random initialization", file=sys.stderr)


def _predict(args: argparse.Namespace) -> int:
    from graphc.use.predict import predict

    _warn_random_init(args)
    out = predict(args.target, args.data, args.output, weights=args.weights, overrides=args.overrides,
                  batch_size=args.batch_size, as_=args.as_, topk=args.topk, force=args.force, progress=not args.quiet,
                  vocab=args.vocab)
    n = len(next(iter(out.values()))) if out else 0
    print(f"predicted {n} examples; wrote {args.output} ({', '.join(f'{k} {list(v.shape)}' for k, v in out.items())})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from graphc.use.evaluate import evaluate

    r = evaluate(args.spec, weights=args.weights, onnx=args.onnx, config=args.config, overrides=args.overrides,
                 split=args.split, data=args.data, batch_size=args.batch_size, vocab=args.vocab)
    if args.json:
        print(json.dumps({"ok": True, "backend": "onnx" if args.onnx else "torch",
                          "split": "file" if args.data else args.split, "metrics": r}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{Path(args.spec).name} on {args.data or args.split} ({'onnxruntime' if args.onnx else 'torch'})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in r.items():
        table.add_row(k, f"{int(v)}" if k == "examples" else f"{v:.6g}")
    Console().print(table)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from graphc.use.generate import generate

    _warn_random_init(args)
    temperature = 0.0 if args.greedy else args.temperature
    g = generate(args.target, args.prompt, weights=args.weights, overrides=args.overrides, max_new_tokens=args.max_new_tokens,
                 temperature=temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if args.json:
        print(json.dumps({"prompt": args.prompt, "ids": g.ids, "text": g.text}))
    else:
        sys.stdout.write(args.prompt + g.text + "\n")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from graphc.serve import make_server
    from graphc.serve.manifest import load_manifest

    man = load_manifest(args.out_dir)  # a clear error before uvicorn starts
    server = make_server(args.out_dir, args.host, args.port, log_level=args.log_level, max_batch=args.max_batch,
                         max_wait_ms=args.max_wait_ms, queue=args.queue, max_body=args.max_body,
                         body_timeout=args.body_timeout, threads=args.threads)
    print(f"serving {man.name} from {args.out_dir} on http://{args.host}:{args.port} (Ctrl-C stops; in-flight requests finish)",
          file=sys.stderr)
    server.run()
    return 0


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a 'graphc compile' folder (onnxruntime, no torch) or a spec file (torch; give --weights)")
    p.add_argument("--weights", metavar="FILE.safetensors", help="weights for a spec target (default: seeded random init)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="spec override (spec target only)")


def register(sub: Any, add_spec_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``predict``, ``evaluate``, ``generate`` and ``serve`` to the ``graphc`` parser."""
    p = sub.add_parser("predict", help="run a model over an input file, write outputs (.csv/.jsonl/.npz)",
                       description="See docs/serve.md. Inputs are matched to the model's inputs by name.")
    _target_args(p)
    p.add_argument("data", help="inputs: .npz, .npy, .safetensors, .csv, .jsonl or .parquet")
    p.add_argument("-o", "--output", required=True, help="output file; its suffix picks the format (.csv, .jsonl, .npz)")
    p.add_argument("--as", dest="as_", choices=("labels", "topk", "logits"), default="logits", help="class outputs as ...")
    p.add_argument("--topk", type=_positive, default=5, help="k for --as topk")
    p.add_argument("--vocab", help="a run folder (or its vocab.json): encode a table's columns as that run's training did")
    p.add_argument("--batch-size", type=_positive, default=256)
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_predict)

    p = sub.add_parser("evaluate", help="the recipe's loss and metrics on a split or a file (torch or ONNX)")
    add_spec_args(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", metavar="FILE.safetensors", help="evaluate the spec in torch with these weights")
    src.add_argument("--onnx", metavar="OUT_DIR", help="evaluate a 'graphc compile' folder in onnxruntime")
    p.add_argument("--config", metavar="RECIPE.yaml", help="recipe file (instead of the spec's train: section)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--data", metavar="FILE", help="evaluate on every example of this file instead of a split")
    p.add_argument("--vocab", metavar="RUN", help="data.table recipes: a run folder (or its vocab.json) whose encoding and classes to apply")
    p.add_argument("--batch-size", type=_positive, default=256)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser("generate", help="sample text from a language model ([B, T] ids -> [B, T, V] logits)")
    _target_args(p)
    p.add_argument("prompt", help="prompt text (its UTF-8 bytes are the token ids)")
    p.add_argument("--max-new-tokens", type=_positive, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--greedy", action="store_true", help="always the most likely token (temperature 0)")
    p.add_argument("--top-k", type=_positive, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print ids and text as JSON")
    p.set_defaults(handler=_generate)

    p = sub.add_parser("serve", help="serve a 'graphc compile' folder over HTTP (onnxruntime, micro-batching)",
                       description="See docs/serve.md for the API, the limits and /metrics.")
    p.add_argument("out_dir", help="a 'graphc compile' folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=_positive, default=32, help="examples per onnxruntime run")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a request waits for others to batch with")
    p.add_argument("--queue", type=_positive, default=256, help="queued requests before answering 503")
    p.add_argument("--max-body", type=_positive, default=8 << 20, help="bytes of a request body")
    p.add_argument("--body-timeout", type=float, default=10.0, help="seconds to receive a body (then 408)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    p.add_argument("--log-level", choices=("warning", "info", "debug"), default="info")
    p.set_defaults(handler=_serve)
