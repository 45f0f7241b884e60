"""The ``graphc`` command line: a thin layer over the Python API.

Exit codes: 0 ok, 1 the input is wrong (spec, data, weights), 2 usage, 3 verification
failed.  Bad input prints compiler-style ``FILE:LINE:COL: error: ...`` lines and a count,
never a traceback (``--debug`` shows one).

Commands live next to what they drive: this file has the spec-level ones (check, summary,
graph, schema); each module in :data:`COMMAND_MODULES` adds its own through one hook::

    def register(sub, add_spec_args) -> None:
        p = sub.add_parser("NAME", help="...")
        add_spec_args(p)              # SPEC and --set KEY=VALUE, as every spec command has
        p.set_defaults(handler=run)   # run(args: argparse.Namespace) -> int (the exit code)

``sub`` is the parser's subparsers action; everything else a command needs is handed to it
here, so no command module imports this one (imports point down: tests/test_architecture.py).
Handlers import their heavy dependencies (torch, onnx) lazily.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from graphc.errors import Diagnostic, GraphcError, Pos
from graphc.outputs import emit_text, ends_with_marker, is_graphc_schema

COMMAND_MODULES = ("graphc.export.commands", "graphc.train.commands", "graphc.weights.commands", "graphc.use.commands",
                   "graphc.sweep.commands")


def add_spec_args(p: argparse.ArgumentParser) -> None:
    """SPEC plus ``--set KEY=VALUE`` (repeatable), shared by every spec command."""
    p.add_argument("spec", help="path to the spec YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param or any spec value (e.g. layers=8, nodes.fc1.out=64)")


def print_diagnostics(diags: Sequence[Diagnostic], stream: Any = None) -> None:
    stream = stream or sys.stderr
    for d in diags:
        print(d, file=stream)


def _check(args: argparse.Namespace) -> int:
    import graphc
    from graphc.summarize import human, total_params

    tg = graphc.check(args.spec, args.overrides)
    warnings = tg.flat.warnings
    nodes, params = len(tg.flat.op_nodes()), total_params(tg)
    outputs = {k: str(v) for k, v in tg.output_types().items()}
    if args.json:
        out = {
            "ok": True,
            "spec": args.spec,
            "name": tg.flat.spec.name,
            "nodes": nodes,
            "total_params": params,
            "inputs": {k: str(v) for k, v in tg.spec_input_types().items()},
            "outputs": outputs,
            "errors": [],
            "warnings": [str(w) for w in warnings],
        }
        print(json.dumps(out, indent=2))
        return 0
    print_diagnostics(warnings)
    outs = ", ".join(f"{k} {v}" for k, v in outputs.items())
    print(f"{args.spec}: ok: {nodes} nodes, {human(params)} params, outputs {outs}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    import graphc
    from graphc.summarize import human, summarize

    tg = graphc.check(args.spec, args.overrides)
    s = summarize(tg)
    plan = _memory_plan(args, tg) if _wants_plan(args) else None
    if args.json:
        print(json.dumps(s.to_json() | ({"train_memory": plan.to_json()} if plan else {}), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{s.name}  (FLOPs at {', '.join(f'{k}={v}' for k, v in s.example.items())})")
    for col, justify in (("node", "left"), ("op", "left"), ("output", "left"), ("params", "right"), ("FLOPs", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for n in s.grouped(args.depth):
        params = human(n.params) + ("" if n.trainable == n.params else " (frozen)")
        table.add_row(n.name, n.op, n.shape, params if n.params else "", human(n.flops) if n.flops else "")
    console = Console(width=max(100, Console().width))
    console.print(table)
    m = s.memory
    console.print(
        f"total params {s.total_params:,} (trainable {s.trainable_params:,}, frozen {s.frozen_params:,})  "
        f"FLOPs {human(s.flops)}  params {human(m['params_fp32_bytes'], 'B')} fp32 / "
        f"{human(m['params_bf16_bytes'], 'B')} bf16  activations {human(m['activations_bytes'], 'B')}"
    )
    if plan is not None:
        _print_plan(console, plan)
    return 0


PLAN_FLAGS = ("batch", "precision", "optimizer", "strategy", "world", "device")


def _wants_plan(args: argparse.Namespace) -> bool:
    """``--train``, or any of its options (they imply it)."""
    return bool(args.train or args.checkpoint_activations or any(getattr(args, f) is not None for f in PLAN_FLAGS))


def _memory_plan(args: argparse.Namespace, tg: Any) -> Any:
    """The memory plan for the command line's setup; unset options come from the spec's
    ``train:`` section when it has one (batch_size, precision, optimizer, grad_accum)."""
    from graphc.graph.memory_planner import TrainSetup, plan_memory

    base = TrainSetup()
    if tg.flat.spec.doc.train is not None:
        from graphc.train.recipe import load_recipe

        r = load_recipe(tg.flat.spec).recipe
        base = TrainSetup(batch=r.batch_size, precision=r.precision, optimizer=r.optimizer.type, momentum=r.optimizer.momentum,
                          grad_accum=r.grad_accum)
    picked = {f: getattr(args, f) for f in PLAN_FLAGS if getattr(args, f) is not None}
    if picked.get("world", 1) > 1 and picked.get("strategy", "none") == "none":
        raise GraphcError("--world needs --strategy ddp or fsdp")
    if picked.get("strategy", "none") != "none" and "world" not in picked:
        picked["world"] = 2
    if args.checkpoint_activations:
        picked["checkpoint"] = True
    fields = {k: getattr(base, k) for k in ("batch", "precision", "optimizer", "momentum", "grad_accum")} | picked
    return plan_memory(tg, TrainSetup(**fields))


def _print_plan(console: Any, plan: Any) -> None:
    from rich.table import Table

    from graphc.summarize import human, plan_rows

    table = Table(title="training memory per process")
    for col, justify in (("part", "left"), ("size", "right"), ("at peak", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in plan_rows(plan):
        table.add_row(*row, style="bold" if row[0] == "peak" else None)
    console.print(table)
    console.print(f"setup: {plan.setup.describe()}\npeak at: {plan.phase}", soft_wrap=True)
    if plan.largest:
        console.print("most saved activations: " + ", ".join(f"{k} {human(v, 'B')}" for k, v in plan.largest), soft_wrap=True)


GRAPH_MARKERS = {"mermaid": "%% written by graphc graph\n", "dot": "// written by graphc graph\n"}


def _graph(args: argparse.Namespace) -> int:
    import graphc
    from graphc.graph.render import to_dot, to_mermaid

    tg = graphc.check(args.spec, args.overrides)
    text = to_mermaid(tg) if args.format == "mermaid" else to_dot(tg)
    marker = GRAPH_MARKERS[args.format]
    return emit_text(text, args.output, args.force, marker, ends_with_marker(marker), "graph file")


def _schema(args: argparse.Namespace) -> int:
    from graphc.spec.schema import spec_schema

    return emit_text(json.dumps(spec_schema(), indent=2) + "\n", args.output, args.force, is_ours=is_graphc_schema, what="schema file")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write to FILE instead of stdout (an existing file only if graphc wrote it)")
    p.add_argument("--force", action="store_true", help="replace an existing FILE graphc did not write")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphc", description="Declarative model-graph compiler for PyTorch.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                        help="import MODULE first, so the ops it registers with @graphc.op can be used (repeatable)")
    parser.add_argument("--version", action="version", version=f"graphc {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="validate a spec and infer every shape")
    add_spec_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(handler=_check)

    p = sub.add_parser("summary", help="per-node shapes, parameters and FLOPs")
    add_spec_args(p)
    p.add_argument("--depth", type=int, default=None, help="aggregate rows to N levels of the node path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    g = p.add_argument_group("training memory (the memory planner; any of these implies --train)")
    g.add_argument("--train", action="store_true", help="estimate per-process peak training memory")
    g.add_argument("--batch", type=_positive, metavar="B", help="batch size (default: the spec's train.batch_size, else its example)")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="autocast precision (default: the recipe's, else fp32)")
    g.add_argument("--optimizer", choices=("adamw", "adam", "sgd"), help="default: the recipe's, else adamw")
    g.add_argument("--strategy", choices=("none", "ddp", "fsdp"), help="data-parallel strategy (default: none)")
    g.add_argument("--world", type=_positive, metavar="N", help="processes (with --strategy; default 2)")
    g.add_argument("--checkpoint-activations", action="store_true", help="checkpoint every block instance")
    g.add_argument("--device", choices=("cuda", "cpu"), help="whose optimizer kernels to assume (default: cuda)")
    p.set_defaults(handler=_summary)

    p = sub.add_parser("graph", help="draw the graph as Mermaid or Graphviz DOT")
    add_spec_args(p)
    p.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    _output_args(p)
    p.set_defaults(handler=_graph)

    p = sub.add_parser("schema", help="print the JSON Schema of the spec format")
    _output_args(p)
    p.set_defaults(handler=_schema)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, add_spec_args)
    return parser


def _version() -> str:
    from graphc.version import __version__

    return __version__


def _load_plugins(modules: Sequence[str]) -> None:
    """Import the op modules the user named explicitly (specs never import code).

    The working directory is searched too, so ``graphc --plugin my_ops`` finds ./my_ops.py.
    """
    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:
            raise GraphcError(f"--plugin {name}: cannot import it: {e}", Pos("<--plugin>")) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _load_plugins(args.plugins)
        code: int = args.handler(args)
        return code
    except GraphcError as e:
        if args.debug:
            raise
        if getattr(args, "json", False):
            errors = [{"file": d.pos.file, "line": d.pos.line, "col": d.pos.col, "message": d.message, "text": str(d)} for d in e.diagnostics]
            print(json.dumps({"ok": False, "errors": errors}, indent=2))
        print_diagnostics(e.diagnostics)
        n = len(e.diagnostics)
        print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
