"""A sweep: an Optuna study whose trials are graphc training runs, checked statically first.

The study lives in its storage (a journal file in the study folder by default, or a
PostgreSQL database given by ``--storage``), so any number of worker processes, on one
machine or several, can share it and a killed sweep can be resumed.  Each worker samples a
configuration, rejects it statically when it cannot work or does not fit (``static.py``: no
run folder, the reason in the trial's user attributes), else trains it in a child process
(``trial.py``) and reports every evaluation so a pruner can stop it early.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from graphc.errors import GraphcError, Pos, SpecError
from graphc.spec.load import Spec, load_spec
from graphc.sweep.space import Choice, FloatRange, IntRange, Space, load_space
from graphc.sweep.static import static_check
from graphc.sweep.trial import run_trial, set_args

MANIFEST = "sweep.json"
JOURNAL = "study.journal"
KIND = "graphc-sweep"


class TrialFailed(Exception):
    """A trial's training ended with an error (recorded as FAIL; the study goes on)."""


@dataclass
class Settings:
    """Everything a worker needs to run trials of one study (sent to worker processes as JSON)."""

    spec: str
    space: str
    study_dir: str
    study_name: str
    config: str | None = None
    trials: int = 20
    timeout: float | None = None
    sampler: str = "tpe"
    seed: int = 0
    static: bool = True
    workers: int = 1
    storage: str | None = None  # never written to the manifest (it may hold a password)
    spec_overrides: list[str] = field(default_factory=list)


@dataclass
class Loaded:
    """A worker's view of the study inputs: the spec, its recipe values and the space."""

    spec: Spec
    space: Space
    recipe_root: Any


def load_inputs(st: Settings) -> Loaded:
    """Load the spec and validate the space against it and its recipe (all errors at once)."""
    from graphc.train.recipe import load_recipe

    spec = load_spec(st.spec, st.spec_overrides)
    recipe_root = _recipe_root(spec, st.config)
    try:
        loaded = load_recipe(spec, st.config)
        columns: list[str] | None = ["epoch", "step", "lr", "train_loss", "val_loss", *(f"val_{m.column}" for m in loaded.recipe.metric_cfgs)]
    except GraphcError:
        columns = None  # the recipe's own errors show when a trial loads it
    space = load_space(st.space, spec, recipe_root, columns)
    return Loaded(spec, space, recipe_root)


def _recipe_root(spec: Spec, config: str | None) -> Any:
    if config is None:
        return spec.doc.train or {}
    from graphc.spec.yaml_loader import load_yaml

    try:
        root = load_yaml(Path(config).read_bytes(), config)
    except OSError as e:
        raise SpecError(f"cannot read recipe: {e.strerror}", Pos(config)) from None
    return root.get("train", root) if isinstance(root, dict) else root


# --- storage, sampler, pruner -----------------------------------------------------------------


def open_storage(url: str | None, study_dir: Path) -> Any:
    """The study's storage: ``url`` (Optuna RDB: postgresql://..., sqlite:///...) or the
    journal file in the study folder (safe for several processes; nothing to start)."""
    import optuna

    if url:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                return optuna.storages.RDBStorage(url, heartbeat_interval=20, grace_period=60)
        except Exception as e:
            raise GraphcError(f"--storage: cannot open {_redact(url)}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(study_dir / JOURNAL)))


def _redact(url: str) -> str:
    """The URL without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def make_sampler(name: str, seed: int, space: Space) -> Any:
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(_grid(space), seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def _grid(space: Space) -> dict[str, list[Any]]:
    """Grid values of each key: choices, or every ``step`` of a range (floats need a step)."""
    grid: dict[str, list[Any]] = {}
    for key, p in space.params.items():
        if isinstance(p, Choice):
            grid[key] = list(p.choices)
        elif isinstance(p, IntRange) and not p.log:
            grid[key] = list(range(p.low, p.high + 1, p.step))
        elif isinstance(p, FloatRange) and p.step is not None and not p.log:
            n = math.floor((p.high - p.low) / p.step + 1e-9)
            grid[key] = [round(p.low + i * p.step, 12) for i in range(n + 1)]
        else:
            raise SpecError(f"space.{key}: the grid sampler needs choices or a range with a step (not a log range)",
                            space.pos("space", key))
    return grid


def make_pruner(name: str) -> Any:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(st: Settings, space: Space, create: bool) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # graphc prints one line per trial; Optuna's would add tracebacks
    storage = open_storage(st.storage, Path(st.study_dir))
    direction: Literal["minimize", "maximize"] = "maximize" if space.doc.objective.mode == "max" else "minimize"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate/group TPE
        sampler = make_sampler(st.sampler, st.seed, space)
    pruner = make_pruner(space.doc.pruner)
    if create:
        try:
            return optuna.create_study(storage=storage, study_name=st.study_name, direction=direction, sampler=sampler, pruner=pruner)
        except optuna.exceptions.DuplicatedStudyError:
            raise GraphcError(f"the storage already holds a study named '{st.study_name}': add --resume to continue it") from None
    try:
        return optuna.load_study(storage=storage, study_name=st.study_name, sampler=sampler, pruner=pruner)
    except KeyError:
        raise GraphcError(f"--resume: the storage holds no study named '{st.study_name}'") from None


# --- the starting point ----------------------------------------------------------------------------


_ABSENT = object()


def base_values(loaded: Loaded, config: str | None) -> tuple[dict[str, Any] | None, str]:
    """The spec's and recipe's current value of each key of the space (the configuration the
    sweep starts from), or None and why when one of them lies outside the space."""
    values: dict[str, Any] = {}
    for key, p in loaded.space.params.items():
        if p.when and any(values.get(cond, _ABSENT) != want for cond, want in p.when.items()):
            continue
        value = current_value(loaded, config, key)
        if value is _ABSENT or not in_space(p, value):
            shown = "no value" if value is _ABSENT else repr(value)
            return None, f"{key} is {shown}, outside the space"
        values[key] = value
    return values, ""


def current_value(loaded: Loaded, config: str | None, key: str) -> Any:
    """A key's value as the spec and recipe stand (``train.*``: the validated recipe, so a
    field the recipe leaves out has its default)."""
    parts = key.split(".")
    if parts[0] == "train":
        from graphc.train.recipe import load_recipe

        try:
            node: Any = load_recipe(loaded.spec, config).recipe
        except GraphcError:
            return _ABSENT
        for part in parts[1:]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif not isinstance(node, (list, dict)) and hasattr(node, part):
                node = getattr(node, part)
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return _ABSENT
        return node
    if len(parts) == 1 and key in loaded.spec.params:
        return loaded.spec.params[key]
    node = loaded.spec.raw
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _ABSENT
    return node


def in_space(p: IntRange | FloatRange | Choice, value: Any) -> bool:
    """Could the sampler have drawn ``value`` for ``p``? (Optuna refuses to enqueue others.)"""
    if isinstance(p, Choice):
        return any(type(value) is type(c) and value == c for c in p.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(p, IntRange):
        return isinstance(value, int) and p.low <= value <= p.high and (p.log or (value - p.low) % p.step == 0)
    if not p.low <= value <= p.high:
        return False
    return p.step is None or abs(round((value - p.low) / p.step) * p.step - (value - p.low)) < 1e-9


def enqueue_base(study: Any, loaded: Loaded, config: str | None) -> str:
    """Make the spec's own configuration the study's first trial, so that a sweep never ends
    worse than where it started (on the objective); returns a line saying what was done."""
    values, why = base_values(loaded, config)
    if values is None:
        return f"the spec's own configuration is not a point of the space ({why}): not tried first"
    study.enqueue_trial(values, user_attrs={"base": True}, skip_if_exists=True)
    return "trial 0 is the spec's own configuration: " + ", ".join(f"{k}={v}" for k, v in values.items())


# --- one trial ---------------------------------------------------------------------------------


def sample(trial: Any, space: Space) -> dict[str, Any]:
    """Suggest each key in file order; a ``when`` entry only when its condition holds."""
    values: dict[str, Any] = {}
    for key, p in space.params.items():
        if p.when and any(cond not in values or values[cond] != want for cond, want in p.when.items()):
            continue
        if isinstance(p, IntRange):
            values[key] = trial.suggest_int(key, p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, FloatRange):
            values[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
        else:
            values[key] = trial.suggest_categorical(key, p.choices)
    return values


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Objective:
    """Optuna's objective: sample, reject statically or train, report, return the metric."""

    def __init__(self, st: Settings, loaded: Loaded, threads: int) -> None:
        self.st, self.loaded, self.space = st, loaded, loaded.space
        self.threads = threads
        self.metric = self.space.doc.objective.metric
        self.budget = {"params": self.space.doc.budget.params, "flops": self.space.doc.budget.flops, "memory": self.space.memory_bytes()}

    def __call__(self, trial: Any) -> float:
        import optuna

        trial.set_user_attr("worker", worker_id())
        values = sample(trial, self.space)
        mode = self.space.doc.objective.mode
        full = {**self.space.trial_overrides(), **values, "train.best_metric": self.metric, "train.best_mode": mode}
        if self.st.static:
            v = static_check(self.loaded.spec, self.st.config, full, self.budget)
            for k in ("params", "flops", "memory", "train_flops"):
                if getattr(v, k) is not None:
                    trial.set_user_attr(f"est_{k}", getattr(v, k))
            if not v.ok:
                trial.set_user_attr("rejected", v.kind)
                trial.set_user_attr("reason", v.reason)
                _say(f"trial {trial.number}: rejected before training ({v.reason})")
                raise optuna.TrialPruned(v.reason)
        return self._train(trial, full)

    def _train(self, trial: Any, full: dict[str, Any]) -> float:
        import optuna

        run_dir = Path(self.st.study_dir) / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        reports = 0

        def report(row: dict[str, float]) -> bool:
            nonlocal reports
            value = row.get(self.metric, math.nan)
            if not math.isfinite(value):
                return False
            trial.report(value, int(row.get("step", reports)))
            reports += 1
            return reports > self.space.doc.pruner_warmup and bool(trial.should_prune())

        t0 = time.perf_counter()
        overrides = [*self.st.spec_overrides, *set_args(full)]
        run = run_trial(self.st.spec, run_dir, self.st.config, overrides, report, self.threads)
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
        if run.stopped:
            step = int(run.rows[-1].get("step", 0)) if run.rows else 0
            trial.set_user_attr("reason", f"pruned at step {step}")
            _say(f"trial {trial.number}: pruned at step {step}")
            raise optuna.TrialPruned()
        best = (run.results or {}).get("best", {})
        if run.exit_code != 0 or self.metric not in best:
            reason = (run.error or f"training exited with code {run.exit_code}").splitlines()[0]
            trial.set_user_attr("reason", reason)
            _say(f"trial {trial.number}: failed ({reason})")
            raise TrialFailed(reason)
        value = float(best[self.metric])
        _say(f"trial {trial.number}: {self.metric} {value:.4g} ({time.perf_counter() - t0:.1f} s)")
        return value


def _say(text: str) -> None:
    print(text, flush=True)


# --- workers -------------------------------------------------------------------------------------


def run_worker(st: Settings, index: int, quota: int, timeout: float | None) -> None:
    """Run up to ``quota`` trials of the study (this process), then return."""
    from optuna.exceptions import ExperimentalWarning

    loaded = load_inputs(st)
    st = Settings(**{**asdict(st), "seed": st.seed + index})  # each worker samples its own stream
    study = open_study(st, loaded.space, create=False)
    threads = trial_threads(st.workers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # multivariate/group TPE
        study.optimize(Objective(st, loaded, threads), n_trials=quota, timeout=timeout, catch=(TrialFailed,), gc_after_trial=False)


def trial_threads(workers: int) -> int:
    """Torch threads per trial: OMP_NUM_THREADS when set, else the cores shared by the workers
    (more threads than cores makes every trial slower, badly so on a busy machine)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def spawn_workers(st: Settings, quotas: list[int], timeout: float | None) -> None:
    """``len(quotas)`` worker processes on this machine against the study's storage."""
    env = dict(os.environ)
    if st.storage:
        env["GRAPHC_SWEEP_STORAGE"] = st.storage  # not on the command line, where ps shows it
    procs = []
    for i, quota in enumerate(quotas):
        if quota <= 0:
            continue
        payload = json.dumps({"settings": {**asdict(st), "storage": None}, "index": i, "quota": quota, "timeout": timeout})
        procs.append(subprocess.Popen([sys.executable, "-m", "graphc.sweep.worker", payload], env=env))
    codes = [p.wait() for p in procs]
    bad = [c for c in codes if c != 0]
    if bad:
        raise GraphcError(f"{len(bad)} of {len(procs)} sweep workers exited with an error (codes {bad}); --resume continues the study")


def quotas(remaining: int, workers: int) -> list[int]:
    """Trials per worker: ``remaining`` split as evenly as possible (the total is exact)."""
    base, extra = divmod(max(0, remaining), workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def fail_dead_trials(study: Any) -> int:
    """Mark RUNNING trials whose worker on this machine is gone as FAIL (so they are not lost).

    Trials of workers on other machines are left to the RDB heartbeat (``--storage``).
    """
    from optuna.trial import TrialState

    host = socket.gethostname()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        whom = str(t.user_attrs.get("worker", ""))
        h, _, pid = whom.rpartition(":")
        if h != host or not pid.isdigit() or _alive(int(pid)):
            continue
        # Optuna has no public call to end another process's trial; its own RetryFailedTrialCallback
        # and fail_stale_trials go through the storage the same way.
        study._storage.set_trial_user_attr(t._trial_id, "reason", f"worker {whom} died during the trial")
        study._storage.set_trial_user_attr(t._trial_id, "killed", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def counted(study: Any) -> int:
    """Trials that used the trial budget: finished ones, not those lost to a killed worker."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=done) if not t.user_attrs.get("killed"))
