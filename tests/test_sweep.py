"""graphc sweep: search-space validation, static rejection, workers, resume after kill -9.

Trials are tiny (a handful of steps, small widths, no torch.compile) so the whole file stays
within CI's budget; the acceptance run at full length is ``tools/sweep_acceptance`` (docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hostile import assert_clean, run_guarded, snapshot

import graphc
from graphc.errors import GraphcError
from graphc.sweep.results import SweepSummary

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "sweep" / "digits_cnn_deep.yaml"

SMALL = """\
objective: {metric: val_accuracy, mode: max}
trials: 8
trial: {steps: 4, eval_every: 2}
fixed: {train.compile: none, train.batch_size: 64}
budget: {params: 25000}
pruner: none
seed: 7
space:
  c1: {type: choice, choices: [4, 8]}
  c2: {type: choice, choices: [8, 16, 48]}
  depth: {type: int, low: 0, high: 2}
  groups: {type: choice, choices: [1, 3]}
  hidden: {type: int, low: 8, high: 64, log: true}
  drop: {type: float, low: 0.0, high: 0.5}
  train.optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


Small = tuple[Path, Path, SweepSummary]  # the shared study: its folder, its space file, its summary

# The spec's own configuration, moved into SMALL's space and budget: the study's trial 0.
BASE = {"c1": 8, "c2": 16, "depth": 0, "groups": 1, "hidden": 16, "drop": 0.1, "train.optimizer.lr": 0.003}
BASE_SETS = ["c1=8", "c2=16", "hidden=16"]  # the others are the spec's and recipe's own values


def _space(tmp_path: Path, text: str = SMALL, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _load(study_dir: Path) -> object:
    import optuna

    from graphc.sweep.study import open_storage

    return optuna.load_study(study_name=study_dir.resolve().name, storage=open_storage(None, study_dir))


# --- the search space: positioned errors, all at once ---------------------------------------------

BAD = """\
objective: {metric: val_acc, mode: max}
space:
  c1: {type: int, low: 64, high: 8}
  widht: {type: int, low: 8, high: 64}
  train.optimizer.lr: {type: float, low: 0, high: 1.0e-2, log: true}
  groups: {type: choice, choices: []}
  drop: {type: float, low: 0.0, high: 0.5, when: {dropout: true}}
  nodes.fc1.outt: {type: int, low: 1, high: 3}
  train.optimizr.lr: {type: float, low: 0.1, high: 0.2}
"""


def test_space_mistakes_are_positioned_all_at_once(tmp_path: Path) -> None:
    space = _space(tmp_path, BAD)
    with pytest.raises(GraphcError) as e:
        graphc.sweep(SPEC, space, tmp_path / "study", show=False)
    lines = [str(d) for d in e.value.diagnostics]
    f = str(space)
    assert lines == [
        f"{f}:1:21: error: objective.metric: the recipe writes no column 'val_acc' (did you mean 'val_accuracy'?) "
        "(columns: epoch, step, lr, train_loss, val_loss, val_accuracy, val_f1)",
        f"{f}:3:34: error: space.c1: empty range: high 8 is below low 64",
        f"{f}:4:3: error: space.widht: unknown key 'widht': neither a param of the spec "
        "(c1, c2, depth, groups, hidden, drop, classes) nor a recipe value (train.*)",
        f"{f}:5:42: error: space.train.optimizer.lr: a log range needs bounds above 0, low is 0.0",
        f"{f}:6:35: error: space.groups.choices: the choice list is empty",
        f"{f}:7:51: error: space.drop.when: condition on 'dropout', which is not a key of the space (did you mean 'drop'?)",
        f"{f}:8:3: error: space.nodes.fc1.outt: unknown key 'nodes.fc1.outt': the spec has no 'nodes.fc1.outt' (did you mean 'out'?)",
        f"{f}:9:3: error: space.train.optimizr.lr: unknown key 'train.optimizr': the recipe has no field 'optimizr' (did you mean 'optimizer'?)",
    ]
    assert not (tmp_path / "study").exists()  # nothing written for a bad space


@pytest.mark.parametrize(("text", "message"), [
    ("objective: {metric: val_loss}\nspace:\n  c1: {type: int, low: 4}\n", "space.c1: missing required field 'high'"),
    ("objective: {metric: val_loss}\nspace:\n  c1: {type: integer, low: 4, high: 8}\n", "does not match any of the expected tags"),
    ("objective: {metric: val_loss}\nspace: {}\n", "space: "),
    ("objective: {metric: val_loss}\nbudget: {memory: 4GBB}\nspace:\n  c1: {type: int, low: 4, high: 8}\n", "budget.memory: expected a size"),
    ("objective: {metric: val_loss}\nspace:\n  heads: {type: choice, choices: [2], when: {attn: true}}\n  attn: {type: choice, choices: [true]}\n",
     "unknown key 'heads'"),
    ("objective: {metric: val_loss}\nfixed: {c1: 8}\nspace:\n  c1: {type: int, low: 4, high: 8}\n", "a value is either fixed or searched"),
])
def test_space_mistake_cli(tmp_path: Path, text: str, message: str) -> None:
    """Each mistake: exit 1, a positioned line, no traceback, nothing written."""
    space = _space(tmp_path, text)
    before = snapshot(tmp_path)
    r = run_guarded("sweep", str(SPEC), "--sweep", str(space), "-o", str(tmp_path / "study"))
    assert_clean(r, contains=message)
    assert snapshot(tmp_path) == before


def test_condition_must_name_an_earlier_key(tmp_path: Path) -> None:
    text = ("objective: {metric: val_loss}\nspace:\n  hidden: {type: int, low: 8, high: 16, when: {depth: 1}}\n"
            "  depth: {type: int, low: 0, high: 2}\n")
    with pytest.raises(GraphcError, match=r"space.yaml:3:48: error: space.hidden.when: 'depth' must be defined above 'hidden'"):
        graphc.sweep(SPEC, _space(tmp_path, text), tmp_path / "study", show=False)


def test_refuses_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for resume in (False, True):
        with pytest.raises(GraphcError, match="mine"):
            graphc.sweep(SPEC, _space(tmp_path), out, resume=resume, show=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_unreachable_storage_is_one_error_and_leaves_nothing(tmp_path: Path) -> None:
    pytest.importorskip("psycopg", reason="no PostgreSQL driver")
    url = f"postgresql://nobody:secret@/db?host={tmp_path}/nosuchsocket&port=1"
    with pytest.raises(GraphcError, match=r"--storage: cannot open postgresql://nobody:\*\*\*@/db") as e:
        graphc.sweep(SPEC, _space(tmp_path), tmp_path / "study", storage=url, show=False)
    assert "secret" not in str(e.value)
    assert not (tmp_path / "study").exists()


# --- static rejection --------------------------------------------------------------------------------


def test_static_check_sorts_invalid_over_budget_and_ok() -> None:
    from graphc.sweep.static import static_check

    spec = graphc.load_spec(SPEC)
    budget = {"params": 25000.0, "flops": None, "memory": None}
    bad = static_check(spec, None, {"c2": 16, "groups": 3, "depth": 1}, budget)
    assert bad.kind == "invalid" and "groups=3 must divide input channels 16" in bad.reason and bad.train_flops is None
    big = static_check(spec, None, {"c2": 96}, budget)
    assert big.kind == "budget" and big.reason.startswith("over budget: params") and big.params == graphc.summary(spec, {"c2": 96}).total_params
    assert big.train_flops and big.train_flops > 0
    small = static_check(spec, None, {"c1": 4, "c2": 8, "hidden": 16}, budget)
    assert small.ok and small.params is not None and small.params < 25000
    mem = static_check(spec, None, {"c1": 4, "c2": 8, "hidden": 16}, {"memory": 1000.0})
    assert mem.kind == "budget" and "memory" in mem.reason


def test_space_and_static_check_import_neither_torch_nor_optuna(tmp_path: Path) -> None:
    code = (
        "import sys, graphc; from graphc.sweep.study import Settings, load_inputs; from graphc.sweep.static import static_check; "
        f"st = Settings(spec={str(SPEC)!r}, space={str(_space(tmp_path))!r}, study_dir='x', study_name='x'); "
        "l = load_inputs(st); v = static_check(l.spec, None, {'c2': 96}, {'params': 1e4}); assert v.kind == 'budget', v; "
        "bad = [m for m in ('torch', 'optuna') if m in sys.modules]; sys.exit(f'imported: {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Small:
    """One study of SMALL shared by the tests below (each sweep costs seconds of training):
    (study folder, space file, summary)."""
    tmp = tmp_path_factory.mktemp("small")
    space = _space(tmp)
    study_dir = tmp / "study"
    return study_dir, space, graphc.sweep(SPEC, space, study_dir, overrides=BASE_SETS, show=False)


def test_sweep_rejects_without_training_and_writes_results(small_study: Small) -> None:
    study_dir, _, s = small_study
    study = _load(study_dir)
    trials = study.get_trials()  # type: ignore[attr-defined]
    assert len(trials) == s.trials == 8
    rejected = [t for t in trials if t.user_attrs.get("rejected")]
    trained = [t for t in trials if not t.user_attrs.get("rejected")]
    kinds = {t.user_attrs["rejected"] for t in rejected}
    assert kinds == {"invalid", "budget"}, [t.user_attrs for t in trials]  # the seed samples both kinds
    for t in rejected:  # no run folder, a reason, recorded as pruned
        assert t.state.name == "PRUNED"
        assert not (study_dir / "trials" / f"{t.number:04d}").exists()
        reason = t.user_attrs["reason"]
        assert ("must divide" in reason) if t.user_attrs["rejected"] == "invalid" else reason.startswith("over budget: params")
    assert trained
    for t in trained:
        run = study_dir / "trials" / f"{t.number:04d}"
        assert t.state.name == "COMPLETE" and (run / "metrics.csv").is_file()
        assert t.value == json.loads((run / "results.json").read_text())["best"]["val_accuracy"]
        assert t.user_attrs["est_params"] <= 25000
    assert s.rejected_invalid + s.rejected_budget == len(rejected) and s.complete == len(trained)
    assert s.saved_flops == pytest.approx(sum(t.user_attrs.get("est_train_flops", 0) for t in rejected))
    # the table, the summary and the best configuration, ready to train
    rows = list(csv.DictReader((study_dir / "trials.csv").open()))
    assert [r["state"] for r in rows] == [("rejected" if t.user_attrs.get("rejected") else "complete") for t in trials]
    best = min(trained, key=lambda t: (-t.value, t.number))  # the best objective; ties: the earliest
    assert s.best_trial == best.number and s.best_value == best.value
    tg = graphc.check(study_dir / "best" / "spec.yaml")
    assert tg.flat.spec.params["c2"] == best.params["c2"] and tg.flat.spec.params["hidden"] == best.params["hidden"]
    from graphc.train.recipe import load_recipe

    r = load_recipe(tg.flat.spec, study_dir / "best" / "recipe.yaml").recipe
    assert r.optimizer.lr == best.params["train.optimizer.lr"] and r.compile == "none" and r.epochs == 20  # the recipe's own length
    assert r.loss.label_smoothing == 0.1 and r.schedule is not None  # the recipe's regularisation is kept
    assert json.loads((study_dir / "summary.json").read_text())["best_trial"] == best.number
    for name, where in s.plots.items():  # drawn, or skipped with a reason
        assert Path(where).is_file() if not where.startswith("skipped") else name in s.plots


def test_first_trial_is_the_spec_as_it_stands(small_study: Small) -> None:
    """Trial 0 trains the spec's (and recipe's) current values, so the sweep never ends below them."""
    study_dir, _, s = small_study
    first = _load(study_dir).get_trials()[0]  # type: ignore[attr-defined]
    assert first.params == BASE and first.user_attrs["base"] is True
    assert first.state.name == "COMPLETE" and s.best_value >= first.value


def test_second_sweep_into_a_study_is_refused(small_study: Small) -> None:
    study_dir, space, _ = small_study
    with pytest.raises(GraphcError, match="already holds a study: add --resume"):  # --resume continues it: tested below
        graphc.sweep(SPEC, space, study_dir, overrides=BASE_SETS, show=False)


def test_base_outside_the_space_is_not_enqueued(tmp_path: Path) -> None:
    """The spec as shipped (c1 32) is no point of SMALL (c1 4 or 8): the sampler starts alone."""
    from graphc.sweep.study import Settings, base_values, load_inputs

    st = Settings(spec=str(SPEC), space=str(_space(tmp_path)), study_dir="x", study_name="x")
    assert base_values(load_inputs(st), None) == (None, "c1 is 32, outside the space")
    st.spec_overrides = BASE_SETS
    assert base_values(load_inputs(st), None) == (BASE, "")


def test_ties_go_to_the_earliest_trial() -> None:
    import optuna

    from graphc.sweep.results import _best

    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for x, v in ((0.5, 0.9), (0.1, 1.0), (0.7, 1.0), (0.2, 0.3)):
        study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions=dist, value=v))
    assert _best(study).number == 1


# --- workers and resume ---------------------------------------------------------------------------------

SLOW = SMALL.replace("trials: 8", "trials: 3").replace("steps: 4, eval_every: 2", "steps: 12, eval_every: 2").replace(
    "c2: {type: choice, choices: [8, 16, 48]}", "c2: {type: choice, choices: [8, 16]}").replace("groups: {type: choice, choices: [1, 3]}",
                                                                                                "groups: {type: choice, choices: [1, 2]}")


def _running_worker(study_dir: Path, deadline: float) -> tuple[int, int]:
    """(trial number, worker pid) of a trial that is training now."""
    while time.monotonic() < deadline:
        if (study_dir / JOURNAL_NAME).exists():
            for t in _load(study_dir).get_trials(deepcopy=False):  # type: ignore[attr-defined]
                run = study_dir / "trials" / f"{t.number:04d}" / "metrics.csv"
                if t.state.name == "RUNNING" and run.exists():
                    return t.number, int(str(t.user_attrs["worker"]).rpartition(":")[2])
        time.sleep(0.3)
    raise AssertionError("no trial started training in time")


JOURNAL_NAME = "study.journal"


def test_two_workers_share_a_study_and_kill_9_then_resume(tmp_path: Path) -> None:
    study_dir = tmp_path / "study"
    space = _space(tmp_path, SLOW)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "graphc", "sweep", str(SPEC), "--sweep", str(space), "-o", str(study_dir), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        number, pid = _running_worker(study_dir, time.monotonic() + 120)
        assert pid != proc.pid  # a worker process, not the parent
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "1 of 2 sweep workers exited with an error" in err and "Traceback" not in err
    s = graphc.sweep(SPEC, space, study_dir, resume=True, show=False)
    trials = _load(study_dir).get_trials()  # type: ignore[attr-defined]
    killed = [t for t in trials if t.user_attrs.get("killed")]
    assert [t.number for t in killed] == [number] and killed[0].state.name == "FAIL"
    assert "died during the trial" in killed[0].user_attrs["reason"]
    assert not [t for t in trials if t.state.name == "RUNNING"]
    finished = [t for t in trials if not t.user_attrs.get("killed")]
    assert len(finished) == 3 and s.trials == 4  # the study completed its 3 trials; the lost one stays recorded
    assert len({t.number for t in trials}) == len(trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) >= 3  # two workers shared the study, then the resuming process
    folders = sorted(p.name for p in (study_dir / "trials").iterdir())
    assert folders == sorted(f"{t.number:04d}" for t in trials if not t.user_attrs.get("rejected"))  # one folder per trained trial


# --- PostgreSQL (a real local server, when one can be started) ---------------------------------------------


def _postgres() -> tuple[str, Path, list[str]]:
    """Start a throwaway PostgreSQL server: (URL, its folder, the stop command), or skip."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed on this machine")
    pytest.importorskip("psycopg", reason="no PostgreSQL driver (pip install 'psycopg[binary]')")
    base = Path(tempfile.mkdtemp(prefix="graphc_pg_"))  # short (socket paths are limited) and reachable by the server's user
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user: list[str] = []
    user = os.environ.get("USER", "postgres")
    if os.geteuid() == 0:  # initdb refuses root: run the server as an unprivileged user
        runuser = shutil.which("runuser")
        if not runuser:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        user = "nobody"
        as_user = [runuser, "-u", user, "--"]
        for p in (base, sock):
            os.chmod(p, 0o777)
    r = subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", user], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"initdb failed: {r.stderr.strip()[:200]}")
    port = str(20000 + os.getpid() % 20000)
    r = subprocess.run([*as_user, pg_ctl, "-D", str(data), "-o", f"-k {sock} -p {port} -c listen_addresses=''", "-w", "-l",
                        str(data / "log"), "start"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"pg_ctl start failed: {r.stderr.strip()[:200]}")
    return f"postgresql://{user}@/postgres?host={sock}&port={port}", base, [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"]


def test_postgresql_storage(tmp_path: Path) -> None:
    url, base, stop = _postgres()
    try:
        text = SMALL.replace("trials: 8", "trials: 2").replace("steps: 4", "steps: 2")
        s = graphc.sweep(SPEC, _space(tmp_path, text), tmp_path / "study", storage=url, show=False)
        import optuna

        study = optuna.load_study(study_name="study", storage=url)
        assert len(study.trials) == s.trials == 2
        assert not (tmp_path / "study" / JOURNAL_NAME).exists()  # the trials live in the database
        manifest = json.loads((tmp_path / "study" / "sweep.json").read_text())
        assert manifest["storage"] == "rdb" and url.split("?")[0] not in json.dumps(manifest)  # no URL (password) in the folder
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
