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

from graphc.errors import Diagnostic, GraphcError, Pos, TrainError, first_line

ERROR_DIR = "GRAPHC_ERROR_DIR"  # where a worker leaves its error for the launcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _record(**fields: Any) -> None:
    """Leave this worker's last word for the launcher: ``$GRAPHC_ERROR_DIR/rank<R>.json``."""
    path = Path(os.environ[ERROR_DIR]) / f"rank{os.environ.get('RANK', '0')}.json"
    path.write_text(json.dumps({"time": time.time(), **fields}))


def _stopped(signum: int, frame: Any) -> None:
    """The agent stops the other workers with SIGTERM when one fails: say so, and go."""
    _record(status="stopped")
    os._exit(128 + signum)


def worker(kwargs: dict[str, Any]) -> Any:
    """One worker (in its own process; the agent set RANK, WORLD_SIZE, ...): ``train`` itself.

    It writes its pid when it starts and a record when it ends (done, stopped, or its error);
    a rank with a pid and no record died without a word (killed, out of memory): the root
    cause.  An error exits 1 at once, without the traceback multiprocessing would print.
    """
    from graphc.train.loop import train

    (Path(os.environ[ERROR_DIR]) / f"rank{os.environ.get('RANK', '0')}.pid").write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, _stopped)
    try:
        result = train(**kwargs)
    except BaseException as e:
        if kwargs.get("debug"):
            import traceback

            traceback.print_exc()
        if isinstance(e, GraphcError):
            _record(status="error", ours=True, message=e.message, exit_code=e.exit_code,
                    diagnostics=[[d.pos.file, d.pos.line, d.pos.col, d.message] for d in e.diagnostics])
        else:
            _record(status="error", ours=False, message=first_line(e), type=type(e).__name__)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    _record(status="done")
    return result


def launch(kwargs: dict[str, Any], nproc: int, debug: bool = False) -> Any:
    """Run ``train(**kwargs)`` on ``nproc`` local workers; rank 0's result, or one error."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not debug:  # the agent's own log lines (rendezvous, "closing signal") are noise to a user
        for name in list(logging.root.manager.loggerDict):  # each elastic module sets its own level: all of them
            if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing")):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex, rdzv_backend="c10d",
                          rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0, monitor_interval=0.2, start_method="spawn")
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads is None:  # N workers on one machine share its cores instead of each taking them all
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    with tempfile.TemporaryDirectory(prefix="graphc-errors-") as errors:
        os.environ[ERROR_DIR] = errors
        try:
            results = elastic_launch(config, worker)({**kwargs, "debug": debug})
        except ChildFailedError as e:
            raise _explain(e, Path(errors)) from None
        except SignalException:  # Ctrl-C / SIGTERM to the launcher: the agent has stopped the workers
            raise KeyboardInterrupt from None
        finally:
            os.environ.pop(ERROR_DIR, None)
            if threads is None:
                os.environ.pop("OMP_NUM_THREADS", None)
    return results[0]


def _read(errors: Path, suffix: str) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for f in errors.glob(f"rank*{suffix}"):
        try:
            text = f.read_text()
            out[int(f.name[4 : -len(suffix)])] = json.loads(text) if suffix == ".json" else int(text)
        except (ValueError, OSError):
            continue
    return out


def _explain(e: Any, errors: Path) -> GraphcError:
    """The root cause, in one line: a rank that died without a word (killed, out of memory),
    else the earliest graphc error of a rank, else the earliest crash (the others' errors are
    only their losing that rank: "connection closed by peer")."""
    pids, recs = _read(errors, ".pid"), _read(errors, ".json")
    silent = sorted(r for r in pids if r not in recs)
    if silent:
        rank = silent[0]
        failure = e.failures.get(rank)
        code = failure.exitcode if failure is not None else None
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with code {code}" if code is not None else "died")
        return TrainError(f"rank {rank} (pid {pids[rank]}) {how}; the other workers were stopped (continue with --resume)")
    failed = sorted((r for r, rec in recs.items() if rec["status"] == "error"), key=lambda r: (not recs[r]["ours"], recs[r]["time"]))
    if not failed:
        return TrainError(f"the workers failed: {e}")
    rank, rec = failed[0], recs[failed[0]]
    if rec["ours"]:  # the worker's own error, positions and exit code as it had them
        err = GraphcError(rec["message"])
        err.diagnostics = [Diagnostic(Pos(f, int(line), int(col)), m) for f, line, col, m in rec["diagnostics"]] or err.diagnostics
        err.exit_code = int(rec["exit_code"])
        return err
    return TrainError(f"rank {rank} failed: {rec['type']}: {rec['message']}")
