"""``graphc train --nproc N``: start N workers through PyTorch's elastic launcher.

This is what ``torchrun --nproc-per-node N`` does (the same agent: rendezvous on localhost at
a free port, the same environment variables for the workers), so a run started here and one
started under an outside ``torchrun`` behave alike.  The agent watches the workers: when one
dies, it stops the others at once (no restarts), and this module turns its report into one
line naming the rank that failed first (its own error if it raised one, else how it died).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from graphc.errors import Diagnostic, GraphcError, Pos, TrainError

ERROR_DIR = "GRAPHC_ERROR_DIR"  # where a worker leaves its error for the launcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker(kwargs: dict[str, Any]) -> Any:
    """One worker (in its own process; the agent set RANK, WORLD_SIZE, ...): ``train`` itself.

    An error is written to ``$GRAPHC_ERROR_DIR/rank<R>.json`` for the launcher and the process
    exits 1 at once, without the traceback multiprocessing would print (``--debug`` keeps it).
    """
    from graphc.train.loop import train

    try:
        return train(**kwargs)
    except BaseException as e:
        if kwargs.get("debug"):
            import traceback

            traceback.print_exc()
        is_ours = isinstance(e, GraphcError)
        text = e.message if isinstance(e, GraphcError) else (str(e).strip().splitlines() or [type(e).__name__])[0]
        record = {"time": time.time(), "ours": is_ours, "type": type(e).__name__, "message": text,
                  "exit_code": e.exit_code if isinstance(e, GraphcError) else 1,
                  "diagnostics": [[d.pos.file, d.pos.line, d.pos.col, d.message] for d in e.diagnostics] if isinstance(e, GraphcError) else []}
        path = Path(os.environ[ERROR_DIR]) / f"rank{os.environ.get('RANK', '0')}.json"
        path.write_text(json.dumps(record))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def launch(kwargs: dict[str, Any], nproc: int, debug: bool = False) -> Any:
    """Run ``train(**kwargs)`` on ``nproc`` local workers; rank 0's result, or one error."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not debug:  # the agent's own log lines (rendezvous, "closing signal") are noise to a user
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex, rdzv_backend="c10d",
                          rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0, monitor_interval=0.2, start_method="spawn")
    with tempfile.TemporaryDirectory(prefix="graphc-errors-") as errors:
        os.environ[ERROR_DIR] = errors
        try:
            results = elastic_launch(config, worker)({**kwargs, "debug": debug})
        except ChildFailedError as e:
            raise _explain(e, Path(errors)) from None
        finally:
            os.environ.pop(ERROR_DIR, None)
    return results[0]


def _explain(e: Any, errors: Path) -> GraphcError:
    """The first failure, in one line: a rank's own error (a graphc error before a crash), or
    the signal or exit code of a rank that died without one (killed, out of memory)."""
    own = {}
    for f in errors.glob("rank*.json"):
        try:
            own[int(f.stem[4:])] = json.loads(f.read_text())
        except (ValueError, OSError):
            continue
    for rank, failure in sorted(e.failures.items()):
        if rank not in own:  # died without a word: the root cause, the others only lost it
            how = f"killed by {signal.Signals(-failure.exitcode).name}" if failure.exitcode < 0 else f"exited with code {failure.exitcode}"
            return TrainError(f"rank {rank} (pid {failure.pid}) {how}; the other workers were stopped. Continue with --resume")
    if own:
        rank, rec = min(own.items(), key=lambda kv: (not kv[1]["ours"], kv[1]["time"]))
        if rec["ours"]:  # the worker's own error, positions and exit code as it had them
            err = GraphcError(rec["message"])
            err.diagnostics = [Diagnostic(Pos(f, int(line), int(col)), m) for f, line, col, m in rec["diagnostics"]] or err.diagnostics
            err.exit_code = int(rec["exit_code"])
            return err
        return TrainError(f"rank {rank} failed: {rec['type']}: {rec['message']}")
    return TrainError(f"the workers failed: {e}")
