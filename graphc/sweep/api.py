"""``graphc.sweep(...)``: the Python entry point of ``graphc sweep``."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from graphc.errors import GraphcError, Pos
from graphc.io import write_text
from graphc.sweep.results import SweepSummary, print_table, write_results
from graphc.sweep.study import (
    KIND,
    MANIFEST,
    Settings,
    counted,
    enqueue_base,
    fail_dead_trials,
    load_inputs,
    open_study,
    quotas,
    run_worker,
    spawn_workers,
)


def prepare_study_dir(study_dir: Path, resume: bool) -> None:
    """Refuse a folder graphc did not make as a study folder (the lead may swap this for
    graphc/outputs.py): a new study needs a missing or empty folder, ``--resume`` one of ours."""
    manifest = study_dir / MANIFEST
    if study_dir.exists() and not study_dir.is_dir():
        raise GraphcError(f"{study_dir}: exists and is not a folder; choose another -o", Pos(str(study_dir)))
    ours = manifest.is_file() and _manifest(manifest).get("kind") == KIND
    if resume:
        if study_dir.exists() and any(study_dir.iterdir()) and not ours:
            raise GraphcError(f"{study_dir}: not a graphc sweep folder (no {MANIFEST}); refusing to resume into it", Pos(str(study_dir)))
        return
    if study_dir.exists() and any(study_dir.iterdir()):
        what = "already holds a study: add --resume to continue it" if ours else "exists and is not empty: choose a new -o"
        raise GraphcError(f"{study_dir}: {what}", Pos(str(study_dir)))


def _manifest(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _check_same_inputs(study_dir: Path, spec: str, space: str) -> None:
    """A resumed study must sample the same space on the same spec, or its trials would mix."""
    m = _manifest(study_dir / MANIFEST)
    for what, path in (("spec", spec), ("space", space)):
        old = m.get(f"{what}_sha256")
        if old and old != _sha(path):
            raise GraphcError(f"{path}: the {what} changed since the study began; start a new study folder", Pos(path))


def sweep(
    spec: str | Path,
    space: str | Path,
    study_dir: str | Path,
    config: str | Path | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    storage: str | None = None,
    resume: bool = False,
    sampler: str | None = None,
    seed: int | None = None,
    static: bool = True,
    overrides: Sequence[str] = (),
    show: bool = True,
) -> SweepSummary:
    """Run (or continue) a hyperparameter sweep of ``spec`` over ``space`` into ``study_dir``.

    Args:
        trials, timeout, sampler, seed: override the space file's values (default 20 trials).
        workers: trial processes on this machine (1: trials run from this process).
        storage: an Optuna RDB URL (``postgresql://user@host/db``) shared by several
            machines; default a journal file in ``study_dir``.
        static: reject invalid and over-budget configurations before training (on by
            default; off only to measure what it saves).
        overrides: ``--set`` values applied to the spec for every trial.

    Example:
        >>> s = graphc.sweep("specs/digits_cnn.yaml", "specs/sweep/digits_cnn.yaml", "out/study")
        >>> s.best_params
    """
    study = Path(study_dir)
    prepare_study_dir(study, resume)
    for name, value in (("--workers", workers), ("--trials", trials if trials is not None else 1)):
        if value < 1:
            raise GraphcError(f"{name} must be at least 1, got {value}")
    st = Settings(spec=str(spec), space=str(space), study_dir=str(study), study_name=study.resolve().name,
                  config=str(config) if config else None, workers=workers, storage=storage, static=static,
                  spec_overrides=list(overrides))
    loaded = load_inputs(st)  # every mistake of the space, before anything is written
    doc = loaded.space.doc
    st.trials = trials if trials is not None else doc.trials if doc.trials is not None else 20
    st.timeout = timeout if timeout is not None else doc.timeout
    st.sampler = sampler or doc.sampler
    st.seed = seed if seed is not None else doc.seed
    if resume and (study / MANIFEST).is_file():
        _check_same_inputs(study, st.spec, st.space)
    created = not study.exists()
    study.mkdir(parents=True, exist_ok=True)
    try:
        opt_study = open_study(st, loaded.space, create=not resume)
    except BaseException:
        if created:  # nothing half-made stays behind: the folder is ours, just made
            shutil.rmtree(study, ignore_errors=True)
        raise
    _write_manifest(study, st)
    if not resume:
        note = enqueue_base(opt_study, loaded, st.config)
        if show:
            print(note)
    if resume:
        lost = fail_dead_trials(opt_study)
        if lost and show:
            print(f"marked {lost} trial(s) of dead workers as failed")
    remaining = st.trials - counted(opt_study)
    if remaining > 0:
        if workers == 1:
            run_worker(st, 0, remaining, st.timeout)
        else:
            spawn_workers(st, quotas(remaining, workers), st.timeout)
    summary = write_results(opt_study, study, loaded.spec, st.config, doc.fixed, doc.objective.metric)
    if show:
        print_table(opt_study, doc.objective.metric)
        print(summary.line(doc.objective.metric))
        for name, where in summary.plots.items():
            if where.startswith("skipped"):
                print(f"plot {name}: {where}")
        print(f"wrote {study}/trials.csv, summary.json, plots/" + (", best/ (spec.yaml, recipe.yaml, command.txt)" if summary.best_trial is not None else ""))
    return summary


def _write_manifest(study: Path, st: Settings) -> None:
    data = {"kind": KIND, "version": 1, "study_name": st.study_name, "spec": st.spec, "space": st.space, "config": st.config,
            "spec_sha256": _sha(st.spec), "space_sha256": _sha(st.space),
            "storage": "journal" if not st.storage else "rdb", "trials": st.trials, "sampler": st.sampler, "seed": st.seed}
    write_text(study / MANIFEST, json.dumps(data, indent=2) + "\n")
