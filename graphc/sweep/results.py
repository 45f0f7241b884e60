"""What a study leaves behind: the trials table, the best configuration, plots, a summary.

Written from the storage after every ``graphc sweep`` (a resumed one too), so they always
describe the whole study.  Each file is written atomically (graphc/io.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from graphc.io import write_text, write_with
from graphc.spec.load import Spec
from graphc.summarize import human
from graphc.sweep.static import split_values
from graphc.sweep.trial import set_args


@dataclass
class SweepSummary:
    """Counts over the study's trials; ``saved_flops`` is the training the rejections skipped."""

    trials: int
    complete: int
    pruned: int
    rejected_invalid: int
    rejected_budget: int
    failed: int
    running: int
    saved_flops: float
    best_value: float | None
    best_trial: int | None
    best_params: dict[str, Any]
    plots: dict[str, str]

    def line(self, metric: str) -> str:
        rejected = self.rejected_invalid + self.rejected_budget
        best = f"; best {metric} {self.best_value:.4g} (trial {self.best_trial})" if self.best_value is not None else ""
        return (f"{self.trials} trials: {self.complete} complete, {self.pruned} pruned early, {self.failed} failed, "
                f"{rejected} rejected before training ({self.rejected_invalid} invalid, {self.rejected_budget} over budget, "
                f"~{human(self.saved_flops)} training FLOPs not spent){best}")


def _kind(t: Any) -> str:
    """complete | pruned | rejected | failed | running (rejected = pruned by the static check)."""
    if t.state.name == "PRUNED":
        return "rejected" if t.user_attrs.get("rejected") else "pruned"
    return str(t.state.name.lower()).replace("fail", "failed")


def summarize_study(study: Any, plots: dict[str, str] | None = None) -> SweepSummary:
    trials = study.get_trials(deepcopy=False)
    kinds = [_kind(t) for t in trials]
    rejected = [t for t in trials if t.user_attrs.get("rejected")]
    saved = sum(float(t.user_attrs.get("est_train_flops", 0.0)) for t in rejected)
    best = _best(study)
    return SweepSummary(
        len(trials), kinds.count("complete"), kinds.count("pruned"),
        sum(1 for t in rejected if t.user_attrs["rejected"] == "invalid"), sum(1 for t in rejected if t.user_attrs["rejected"] == "budget"),
        kinds.count("failed"), kinds.count("running"), saved,
        best.value if best else None, best.number if best else None, dict(best.params) if best else {}, plots or {},
    )


def _best(study: Any) -> Any:
    """The complete trial with the best objective (on the validation split); ties go to the
    earliest, so the spec's own configuration (trial 0) stays best unless a trial beats it.
    (Written out because Optuna's ``best_trial`` leaves the order of ties to the storage.)"""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
    return min(done, key=lambda t: (sign * t.value, t.number))


def trial_rows(study: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and one row per trial: number, state, objective, reason, params, estimates."""
    trials = study.get_trials(deepcopy=False)
    keys = list(dict.fromkeys(k for t in trials for k in t.params))
    cols = ["trial", "state", "objective", *keys, "est_params", "est_flops", "est_memory", "seconds", "reason"]
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.number, "state": _kind(t), "objective": t.value if t.value is not None else ""}
        row |= {k: t.params.get(k, "") for k in keys}
        row |= {c: t.user_attrs.get(c, "") for c in ("est_params", "est_flops", "est_memory", "seconds", "reason")}
        rows.append(row)
    return cols, rows


def write_table(study: Any, path: Path) -> None:
    cols, rows = trial_rows(study)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def print_table(study: Any, metric: str, limit: int = 40) -> None:
    """The trials as a rich table (the last ``limit``; trials.csv has them all)."""
    from rich.console import Console
    from rich.table import Table

    cols, rows = trial_rows(study)
    table = Table(title=f"trials ({metric})")
    for c in cols:
        if c in ("est_flops", "est_memory", "seconds"):
            continue
        table.add_column(c if c != "objective" else metric, justify="right" if c in ("trial", "objective", "est_params") else "left")
    for row in rows[-limit:]:
        cells = []
        for c in cols:
            if c in ("est_flops", "est_memory", "seconds"):
                continue
            v = row[c]
            cells.append(human(v) if c == "est_params" and v != "" else f"{v:.4g}" if isinstance(v, float) else str(v))
        table.add_row(*cells)
    Console(width=max(120, Console().width)).print(table)


def _plain(value: Any) -> Any:
    """YMap/YSeq (positioned) -> plain dict/list that yaml.safe_dump accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def write_best(study_dir: Path, spec: Spec, config: str | None, values: dict[str, Any], fixed: dict[str, Any]) -> None:
    """best/spec.yaml + best/recipe.yaml: the best configuration, ready for ``graphc train``.

    The swept and fixed values are written into the files (params updated, ``${...}`` kept),
    and the recipe keeps its own training length (a trial's shortened length is a sweep
    setting, not part of the configuration).
    """
    from graphc.spec.overrides import apply_overrides
    from graphc.sweep.study import _recipe_root

    full = {**fixed, **values}
    spec_over, recipe_over = split_values(full)
    s = spec.with_overrides(spec_over)
    spec_doc = _plain(s.raw)
    spec_doc.pop("train", None)
    recipe = _plain(s.doc.train if config is None else _recipe_root(s, config))
    apply_overrides(recipe, recipe_over, create=True, prefix="train.")
    out = study_dir / "best"
    header = "# written by graphc sweep: the best configuration of the study\n"
    write_text(out / "spec.yaml", header + yaml.safe_dump(spec_doc, sort_keys=False))
    write_text(out / "recipe.yaml", header + yaml.safe_dump({"train": recipe}, sort_keys=False))
    sets = " ".join(f"--set {a}" for a in set_args(full))
    write_text(out / "command.txt", f"graphc train {out}/spec.yaml --config {out}/recipe.yaml -o {study_dir}/best_run\n"
                                    f"# the same from the original files:\n# graphc train {spec.file}"
                                    f"{f' --config {config}' if config else ''} {sets} -o {study_dir}/best_run\n")
    write_text(out / "params.json", json.dumps(values, indent=2) + "\n")


PLOTS = {
    "history": "plot_optimization_history",
    "importances": "plot_param_importances",
    "parallel": "plot_parallel_coordinate",
}


def _importance_args() -> dict[str, Any]:
    """PED-ANOVA: Optuna's quantile-based importance, milliseconds where the default fANOVA
    forest took seconds per plot (and the plots are redrawn after every sweep and resume)."""
    from optuna.importance import PedAnovaImportanceEvaluator

    return {"evaluator": PedAnovaImportanceEvaluator()}


def write_plots(study: Any, folder: Path) -> dict[str, str]:
    """PNG plots of Optuna's matplotlib visualisations; a plot that cannot be drawn (too few
    complete trials, a single value) is skipped and the reason returned instead of a path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    extra = {"importances": _importance_args()}
    out: dict[str, str] = {}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    for name, fn in PLOTS.items():
        if len(complete) < 2:
            out[name] = f"skipped: {len(complete)} complete trial(s), need 2"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = getattr(ovm, fn)(study, **extra.get(name, {}))
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            path = folder / f"{name}.png"
            _save(fig, path)
            out[name] = str(path)
        except Exception as e:  # Optuna raises for spaces it cannot plot; the sweep's results stand
            out[name] = f"skipped: {type(e).__name__}: {e}"
        finally:
            plt.close("all")
    return out


def _save(fig: Any, path: Path) -> None:
    def draw(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=100)

    write_with(path, draw)


def write_results(study: Any, study_dir: Path, spec: Spec, config: str | None, fixed: dict[str, Any], metric: str) -> SweepSummary:
    """trials.csv, best/, plots/ and summary.json for the study as it is now."""
    write_table(study, study_dir / "trials.csv")
    best = _best(study)
    if best is not None:
        write_best(study_dir, spec, config, dict(best.params), fixed)
    plots = write_plots(study, study_dir / "plots")
    s = summarize_study(study, plots)
    data = {k: (v if not (isinstance(v, float) and math.isnan(v)) else None) for k, v in s.__dict__.items()}
    write_text(study_dir / "summary.json", json.dumps({"metric": metric, **data}, indent=2, default=str) + "\n")
    return s
