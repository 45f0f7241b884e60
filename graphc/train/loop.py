"""The training loop: a straight, readable loop over optimizer steps.

One optimizer step = ``grad_accum`` micro-batches of ``batch_size`` examples.  The batch
order is a pure function of (seed, epoch, step): each epoch's permutation comes from its own
seeded generator, so resuming at step N needs only N (plus the optimizer, schedule and RNG
state saved with the checkpoint) to continue exactly as if never interrupted.  Evaluation,
metrics.csv, best weights and checkpoints all happen together every ``eval_every`` steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from graphc.data.loader import InOrder, Loader, StepSampler, make_loader
from graphc.errors import DataError, TrainError
from graphc.graph.infer import TypedGraph
from graphc.io import write_text, write_with
from graphc.outputs import FOLDER_FILES, Folder, OutputError, check_folder, clear_owned, spec_path, write_marker
from graphc.train import activations
from graphc.train import checkpoint as ckpt
from graphc.train import distributed as dd
from graphc.train.data import Data, Split, load_data
from graphc.train.lora import apply_lora, merged, remove
from graphc.train.objectives import MetricState, total_loss
from graphc.train.observe import Progress, TensorBoard, plot_curves, write_metrics_csv
from graphc.train.optim import Schedule, make_optimizer
from graphc.train.recipe import LoadedRecipe, Recipe


@dataclass
class TrainResult:
    """What a finished run reports (also written to ``RUN_DIR/results.json``)."""

    run_dir: Path
    steps: int
    best_step: int
    best: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    unigram_loss: float | None = None
    compile: str = "none"
    stopped_early: bool = False


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainError("device 'cuda' was requested but no CUDA device is available (use device: auto)")
    return torch.device(name)


def compile_mode(gm: fx.GraphModule, mode: str) -> str:
    """Resolve ``auto``: regional when a block is repeated (compiled once for all its
    instances, a fraction of the whole-model cold start), else the whole model."""
    if mode != "auto":
        return mode
    from graphc.lower.fx_lower import BlockModule

    classes = [type(m) for m in gm.modules() if isinstance(m, BlockModule)]
    return "regional" if any(classes.count(c) > 1 for c in classes) else "model"


def compiled_forward(gm: fx.GraphModule, mode: str) -> nn.Module:
    """The callable that training runs: ``gm`` itself, compiled whole, or per block."""
    if mode == "model":
        return torch.compile(gm)  # type: ignore[return-value]
    if mode == "regional":
        from graphc.lower.fx_lower import BlockModule

        for m in gm.modules():
            if isinstance(m, BlockModule):
                m.compile()  # one shared class and code object: compiled once, reused by all
    return gm


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The recipe's precision as ``torch.autocast``: weights, gradients and optimizer state stay
    fp32 (the master copy), matmuls, attention and convolutions run in bf16/fp16.

    Why this and not more, for bf16 on CPU (measured with tools/bench train, docs/train.md
    "bf16 on CPU"): the speed comes from oneDNN's bf16 GEMMs (avx512_bf16/AMX), which autocast
    reaches in eager and compiled code alike; inductor keeps those GEMMs as library calls and
    only fuses the elementwise rest, so compiling adds little on CPU.  Holding the parameters in
    bf16 saved a further ~7% of a step but loses small AdamW updates to bf16's 8-bit mantissa,
    and ``torch.set_float32_matmul_precision("medium")`` would turn fp32 runs' matmuls into bf16
    behind the recipe's back (oneDNN honours it on CPU), so neither is done.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def bf16_note(device: torch.device, precision: str) -> str | None:
    """A warning for ``precision: bf16`` on a CPU without bf16 instructions (neither
    avx512_bf16 nor AMX): oneDNN then emulates bf16 matmuls, slower than fp32 ones."""
    if precision != "bf16" or device.type != "cpu":
        return None
    native = [getattr(torch.cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(native):
        return None
    return "note: this CPU has no bf16 instructions (avx512_bf16 or AMX): precision bf16 will likely train slower than fp32"


class Trainer:
    """Holds a run's model, optimizer and state; :meth:`run` trains to the end."""

    def __init__(self, tg: TypedGraph, loaded: LoadedRecipe, run_dir: Path, init: str | None = None, quiet: bool = False) -> None:
        from graphc.lower.built import lower_spec

        self.tg, self.loaded, self.recipe = tg, loaded, loaded.recipe
        self.run_dir = run_dir
        self.world = dd.world_from_env()  # one process unless torchrun / --nproc / srun started this one
        self.quiet = quiet or not self.world.main
        self.device = dd.device_for(self.world, pick_device(self.recipe.device))
        if self.recipe.precision == "fp16" and self.device.type != "cuda":
            raise TrainError(f"{loaded.where('precision')}: fp16 needs a CUDA device (use bf16 on {self.device.type})", loaded.pos("precision"))
        if self.world.distributed and self.recipe.unfreeze:
            raise TrainError(f"{loaded.where('unfreeze')}: gradual unfreezing needs one process (DDP and FSDP fix the trainable "
                             "parameters when they wrap the model)", loaded.pos("unfreeze"))
        dd.init(self.world, self.device, self.recipe.distributed.timeout)
        if self.device.type == "cuda":
            from graphc.train.memory import check_memory

            check_memory(tg, self.recipe, self.device, self.world.size, tuple(activations.chosen(tg, loaded)))  # the planner, before any allocation
        if (note := bf16_note(self.device, self.recipe.precision)) and not self.quiet:
            import sys

            print(note, file=sys.stderr)
        torch.manual_seed(self.recipe.seed)
        self.data: Data = load_data(tg, loaded, self.recipe.seed)
        self._check_outputs()
        self.gm = lower_spec(tg, seed=self.recipe.seed, device=self.device).module
        self.init_plan: Any = None  # a --map/--partial load's plan, written once the run folder is claimed
        if init:
            from graphc.weights import WeightSource, load_into, load_weights_from

            if isinstance(init, WeightSource):  # --map/--partial: through the transfer plan
                self.init_plan = load_into(self.gm, init, tg)
            else:
                load_weights_from(self.gm, init, tg)
        self.adapters = apply_lora(self.gm, self.recipe.lora, loaded) if self.recipe.lora else []
        activations.apply(self.gm, activations.chosen(tg, loaded))  # before compile: the compiled blocks recompute
        self.mode = compile_mode(self.gm, self.recipe.compile)
        self.forward = compiled_forward(self.gm, self.mode)
        partial_loss = bool(set(tg.flat.outputs) - {t.output for t in self.recipe.loss_terms})
        self.strategy = dd.strategy(self.world, self.device, self.recipe.distributed.strategy, partial_loss)
        self.forward = self.strategy.wrap(self.gm, self.forward, self.recipe.precision)  # before the optimizer: FSDP swaps the parameters
        self.opt = make_optimizer(self.gm, tg, self.recipe.optimizer, loaded)  # loaded: param_groups/unfreeze with positions
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.recipe.precision == "fp16")
        self.micro = self.recipe.batch_size * self.world.size  # a global micro-batch: every rank's batch_size together
        self.bpe = len(self.data.train) // self.micro  # micro-batches per epoch (last partial dropped: static shapes)
        if self.bpe < self.recipe.grad_accum:
            procs = f" x {self.world.size} processes" if self.world.distributed else ""
            raise DataError(f"{loaded.where('batch_size')}: {len(self.data.train)} training examples make no full step of "
                            f"{self.recipe.grad_accum} x {self.recipe.batch_size}{procs}", loaded.pos("batch_size"))
        self.spe = self.bpe // self.recipe.grad_accum  # optimizer steps per epoch
        self.total = self.recipe.steps or (self.recipe.epochs or 1) * self.spe
        self.eval_every = self.recipe.eval_every or self.spe
        self.schedule = Schedule(self.recipe.schedule, self.recipe.optimizer.lr, self.total)
        self.columns = ["epoch", "step", "lr", "train_loss", "val_loss", *(f"val_{m.column}" for m in self.recipe.metric_cfgs)]
        # trainer state (all of it goes into each checkpoint)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.best_value, self.best_step = math.inf if self.recipe.best_mode == "min" else -math.inf, 0
        self.es_best, self.es_bad = math.inf if (self.recipe.early_stopping and self.recipe.early_stopping.mode == "min") else -math.inf, 0
        self.bad_steps = 0
        self.loss_sum, self.loss_n = 0.0, 0
        self.overrides: list[str] = []  # the --set values, recorded in config.yaml
        self._batches: Iterator[dict[str, torch.Tensor]] | None = None
        self._at, self._left = -1, 0  # the step the batch iterator is at; micro-batches of it still queued
        self.data_wait = 0.0  # seconds the training loop waited for a batch

    def _check_outputs(self) -> None:
        outs = set(self.tg.flat.outputs)
        for i, t in enumerate(self.recipe.loss_terms):
            if t.output not in outs:
                path = ("loss", i, "output") if isinstance(self.recipe.loss, list) else ("loss", "output")
                raise TrainError(f"{self.loaded.where(*map(str, path))}: the spec has no output '{t.output}' (outputs: {', '.join(sorted(outs))})",
                                 self.loaded.pos(*path))

    # --- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step, "history": self.history, "best_value": self.best_value, "best_step": self.best_step,
            "es_best": self.es_best, "es_bad": self.es_bad, "bad_steps": self.bad_steps,
            "optimizer": {} if self.world.distributed else self.opt.state_dict(),  # sharded runs: in the checkpoint's dcp/
            "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def restore(self, path: Path) -> None:
        s = ckpt.restore(path, self.gm, self.opt, self.strategy)  # model and optimizer, any format and number of processes
        self.step, self.history = int(s["step"]), list(s["history"])
        self.best_value, self.best_step = float(s["best_value"]), int(s["best_step"])
        self.es_best, self.es_bad, self.bad_steps = float(s["es_best"]), int(s["es_bad"]), int(s["bad_steps"])
        self.schedule.load_state_dict(s["schedule"])
        self.scaler.load_state_dict(s["scaler"])
        torch.set_rng_state(s["rng_cpu"])
        if s["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["rng_cuda"])

    # --- batches ----------------------------------------------------------------------------

    def train_loader(self, start: int) -> Iterator[dict[str, torch.Tensor]]:
        """The training batches from optimizer step ``start`` to the end (graphc/data/loader.py)."""
        sampler = StepSampler(len(self.data.train), self.micro, self.recipe.grad_accum, self.recipe.seed,
                              start, self.total, self.world.rank, self.world.size)  # global micro-batches, this rank's share
        return iter(self._loader(self.data.train, sampler))

    def _loader(self, split: Split, sampler: StepSampler | InOrder) -> Loader:
        cfg = self.recipe.data
        workers = cfg.workers if isinstance(sampler, StepSampler) else min(cfg.workers, len(sampler))
        return make_loader(split.source, sampler, split.dtypes, workers, cfg.prefetch, pin=self.device.type == "cuda")

    def micro_batches(self, step: int) -> Iterator[dict[str, torch.Tensor]]:
        """The ``grad_accum`` micro-batches of optimizer step ``step`` (a pure function of it).

        They come from one loader iterator that runs ahead (workers, prefetch); asking for
        any other step than the next one starts a new iterator at that step.
        """
        if self._batches is None or self._at != step:
            self._batches, self._left = self.train_loader(step), 0
        for _ in range(self._left):  # the rest of a step abandoned midway (a skipped non-finite loss)
            next(self._batches)
        self._at, self._left = step + 1, self.recipe.grad_accum
        for _ in range(self.recipe.grad_accum):
            t0 = time.perf_counter()
            batch = next(self._batches)
            self.data_wait += time.perf_counter() - t0
            self._left -= 1
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def outputs(self, fwd: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = fwd(*(batch[n] for n in self.data.inputs))
        return out if isinstance(out, dict) else {next(iter(self.tg.flat.outputs)): out}

    # --- one step ----------------------------------------------------------------------------

    def train_step(self) -> float:
        """One optimizer step; returns its loss (non-finite: the update is skipped)."""
        self.gm.train()
        self.schedule.apply(self.opt, self.step)
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        for k, batch in enumerate(self.micro_batches(self.step)):
            with self.strategy.accumulating(last=k == self.recipe.grad_accum - 1):  # gradients cross ranks once per step
                with _autocast(self.device, self.recipe.precision):
                    loss = total_loss(self.outputs(self.forward, batch), batch, self.recipe.loss_terms) / self.recipe.grad_accum
                value = dd.mean(self.world, loss.detach())  # the global batch's loss, the same on every rank
                if not math.isfinite(value):
                    return self._skip(value)  # so every rank skips together
                self.scaler.scale(loss).backward()
            total += value
        if self.recipe.clip_grad is not None:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.gm.parameters(), self.recipe.clip_grad)
        self.scaler.step(self.opt)
        self.scaler.update()
        return total

    def _skip(self, value: float) -> float:
        self.opt.zero_grad(set_to_none=True)
        self.bad_steps += 1
        if self.bad_steps > self.recipe.max_bad_steps:
            raise TrainError(f"step {self.step}: loss is {value} ({self.bad_steps} non-finite losses, limit "
                             f"{self.loaded.where('max_bad_steps')}={self.recipe.max_bad_steps}); stopped", self.loaded.pos())
        if not self.quiet:
            import sys

            print(f"warning: step {self.step}: loss is {value}; step skipped ({self.bad_steps}/{self.recipe.max_bad_steps})", file=sys.stderr)
        return value

    # --- evaluation ---------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, split: Split, prefix: str) -> dict[str, float]:
        """Mean loss and every metric over ``split`` (eager: no recompiles for eval shapes)."""
        self.gm.eval()
        ms = MetricState(self.recipe.metric_cfgs)
        loss_sum, n = 0.0, 0
        bs = self.recipe.eval_batch_size or 4 * self.micro  # every rank evaluates the same batches (FSDP's forward is collective)
        with torch.compiler.set_stance("force_eager"):
            for cpu_batch in self._loader(split, InOrder(len(split), bs, self.recipe.eval_batches)):
                batch = {k: v.to(self.device) for k, v in cpu_batch.items()}
                size = len(next(iter(batch.values())))
                with _autocast(self.device, self.recipe.precision):
                    out = self.outputs(self.gm, batch)
                loss_sum += float(total_loss(out, batch, self.recipe.loss_terms)) * size
                n += size
                ms.update(out, batch)
        vals = {"loss": loss_sum / max(n, 1), **ms.values()}
        return {f"{prefix}_{k}": v for k, v in vals.items()}

    def _eval_point(self) -> bool:
        """Evaluate, log, keep best weights, checkpoint; True when early stopping triggers."""
        row: dict[str, float] = {"epoch": (self.step - 1) // self.spe + 1, "step": self.step, "lr": self.opt.param_groups[0]["lr"],
                                 "train_loss": self.loss_sum / max(self.loss_n, 1) if self.loss_n else math.nan}
        row |= self.evaluate(self.data.val if len(self.data.val) else self.data.train, "val")
        self.loss_sum, self.loss_n = 0.0, 0
        self.history.append(row)
        self.schedule.observe(row["val_loss"])
        self.progress.log(row)
        if self.tb is not None:
            self.tb.log(row, self.step)
        dd.on_main(self.world, lambda: write_metrics_csv(self.run_dir / "metrics.csv", self.history, self.columns))
        self._keep_best(row)
        stop = self._early_stop(row)
        n_evals = len(self.history)
        if n_evals % self.recipe.checkpoint.every == 0 or self.step >= self.total or stop:
            self._checkpoint()
        return stop

    def _checkpoint(self) -> None:
        folder = self.run_dir / "checkpoints"
        if self.world.distributed:
            ckpt.save_sharded(folder, self.step, self.gm, self.opt, self.state(), self.world)
        else:
            ckpt.save_checkpoint(folder, self.step, self.gm, self.state())
        dd.on_main(self.world, lambda: ckpt.prune(folder, self.recipe.checkpoint.keep, {f"step_{self.best_step:08d}"}))

    def _keep_best(self, row: dict[str, float]) -> None:
        from graphc.weights.tensors import save_weights

        v = row.get(self.recipe.best_metric)
        if v is None:
            raise TrainError(f"{self.loaded.where('best_metric')}: no column '{self.recipe.best_metric}' (have: {', '.join(self.columns)})",
                             self.loaded.pos("best_metric"))
        better = v < self.best_value if self.recipe.best_mode == "min" else v > self.best_value
        if not (better and math.isfinite(v)):
            return
        path, meta = self.run_dir / "best.safetensors", {"graphc.step": str(self.step)}
        if dd.sharded(self.gm):  # FSDP: the whole tensors gathered onto rank 0, one ordinary file
            state = self.strategy.full_state(self.gm)
            dd.on_main(self.world, lambda: ckpt.assert_finite_state(state, self.step))
            dd.on_main(self.world, lambda: save_weights(self.gm, path, metadata=meta, state=state))
        else:
            def save() -> None:
                ckpt.assert_finite(self.gm, self.step)
                with merged(self.adapters):  # plain weights under the spec's names
                    save_weights(self.gm, path, metadata=meta)

            dd.on_main(self.world, save)
        self.best_value, self.best_step = v, self.step

    def _early_stop(self, row: dict[str, float]) -> bool:
        es = self.recipe.early_stopping
        if es is None:
            return False
        v = row.get(es.metric, math.nan)
        better = v < self.es_best - es.min_delta if es.mode == "min" else v > self.es_best + es.min_delta
        self.es_best, self.es_bad = (v, 0) if better else (self.es_best, self.es_bad + 1)
        return self.es_bad >= es.patience

    # --- the run ------------------------------------------------------------------------------

    def run(self, resume: bool = False, force: bool = False) -> TrainResult:
        self._claim(resume, force)
        self.progress = Progress(self.total, self.step, self.quiet)
        self.tb = TensorBoard(self.run_dir) if self.world.main else None
        stopped = False
        try:
            while self.step < self.total and not stopped:
                loss = self.train_step()
                self.step += 1
                if math.isfinite(loss):
                    self.loss_sum, self.loss_n = self.loss_sum + loss, self.loss_n + 1
                self.progress.step(self.step, loss, self.micro * self.recipe.grad_accum, self.data_wait)
                if self.step % self.eval_every == 0 or self.step >= self.total:
                    stopped = self._eval_point()
        finally:
            self._batches = None  # stops the loader's workers
            self.progress.close()
            if self.tb is not None:
                self.tb.close()
        result = self._finish(stopped)
        dd.shutdown()
        return result

    def _claim(self, resume: bool, force: bool) -> None:
        """Make ``run_dir`` this run's folder (graphc.outputs rules): a fresh run removes the
        previous run's own files (FOLDER_FILES["run"]) and nothing else; --resume keeps them."""
        folder = dd.on_main(self.world, lambda: check_folder(self.run_dir, "run", force, spec_path(self.tg.flat.spec), resume))
        if resume:
            self._resume()  # first: a folder with no checkpoint is refused before anything is written
        dd.on_main(self.world, lambda: self._make_folder(folder, resume))  # rank 0 alone writes the run folder

    def _make_folder(self, folder: Folder | None, resume: bool) -> None:
        if not resume and folder is not None and folder.exists:
            clear_owned(folder)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.run_dir}: cannot create the run folder: {e.strerror}") from None
        write_marker(self.run_dir, "run")
        self._write_run_files(resume)
        if self.init_plan is not None:
            from graphc.weights import PLAN_FILE

            write_text(self.run_dir / PLAN_FILE, json.dumps(self.init_plan.to_json(), indent=2) + "\n")

    def _write_run_files(self, resume: bool) -> None:
        """What makes the run reproducible: config.yaml (the resolved recipe and --set values),
        spec.yaml (the spec as trained), data.json (the data's fingerprint) and the data's
        artifacts (classes.json ...).  A resume keeps the first data.json and warns when the
        data has changed since."""
        from graphc.data.fingerprint import changes
        from graphc.train.runfiles import config_yaml, spec_yaml

        fp = self.run_dir / "data.json"
        old = _read_json(fp) if resume else None
        if old is not None:
            what = changes(old, self.data.fingerprint)
            if what is not None:
                print(f"warning: {fp}: the data changed since this run started ({what}); resuming with the data as it is now",
                      file=sys.stderr)
        else:
            write_text(fp, json.dumps(self.data.fingerprint, indent=2) + "\n")
        write_text(self.run_dir / "config.yaml", config_yaml(self.loaded, self.tg.flat.spec, self.overrides))
        write_text(self.run_dir / "spec.yaml", spec_yaml(self.tg.flat.spec))
        for name, data in self.data.artifacts.items():
            if name not in FOLDER_FILES["run"] or "/" in name:
                raise TrainError(f"data artifact '{name}' is not a run-folder file (add it to graphc.outputs FOLDER_FILES['run'])")
            _write_bytes(self.run_dir / name, data)

    def _resume(self) -> None:
        path, warnings = ckpt.latest_valid(self.run_dir / "checkpoints")
        for w in warnings if not self.quiet else ():
            print(f"warning: {w}", file=sys.stderr)
        if path is None:
            raise TrainError(f"{self.run_dir}: --resume found no complete checkpoint")
        self.restore(path)
        dd.on_main(self.world, lambda: write_metrics_csv(self.run_dir / "metrics.csv", self.history, self.columns))
        if not self.quiet:
            print(f"resumed from {path} (step {self.step})", file=sys.stderr)

    def _finish(self, stopped: bool) -> TrainResult:
        """Test metrics of the best weights, the curves PNG and results.json."""
        from graphc.weights.tensors import load_weights

        best_file = self.run_dir / "best.safetensors"
        if best_file.exists():
            remove(self.adapters)  # the best weights are merged ones
            if dd.sharded(self.gm):
                self.strategy.load_full(self.gm, ckpt.read_full(best_file, self.gm))
            else:
                load_weights(self.gm, best_file)
        test = self.evaluate(self.data.test, "test") if len(self.data.test) else {}
        best = next((r for r in self.history if r["step"] == self.best_step), self.history[-1] if self.history else {})
        result = TrainResult(self.run_dir, self.step, self.best_step, best, test, self.history, self.data.unigram_loss, self.mode, stopped)
        summary = {"steps": self.step, "best_step": self.best_step, "best": best, "test": test, "compile": self.mode,
                   "stopped_early": stopped, "unigram_val_loss": self.data.unigram_loss}

        def write() -> None:
            if self.history:
                plot_curves(self.run_dir / "curves.png", self.history, self.columns)
            write_text(self.run_dir / "results.json", json.dumps(summary, indent=2) + "\n")

        dd.on_main(self.world, write)
        return result


def train(
    spec: str | Path,
    run_dir: str | Path,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    init: str | None = None,
    quiet: bool = False,
    force: bool = False,
    nproc: int | None = None,
    debug: bool = False,
) -> TrainResult:
    """Train ``spec`` with its recipe (``train:`` section or ``config``) into ``run_dir``.

    ``run_dir`` must be new, empty, or (with ``resume``) a run to continue; ``force`` starts
    afresh in any other folder, removing only the files a run writes (see graphc.outputs).
    ``nproc`` > 1 trains on that many local processes (graphc.train.launch); under torchrun or
    srun every process calls this function itself.

    Example:
        >>> r = graphc.train.train("specs/digits_cnn.yaml", "out/digits", overrides=["train.epochs=1"])
        >>> r.test["test_accuracy"]
    """
    from graphc.graph.check import as_spec, check
    from graphc.spec.overrides import split_overrides
    from graphc.train.recipe import load_recipe

    if dd.world_from_env().main:  # before any work; changes nothing (the other ranks follow rank 0's run folder)
        check_folder(run_dir, "run", force, spec_path(spec), resume)
        if config is not None:
            check_folder(run_dir, "run", force, spec_path(config), resume)
    spec_over, recipe_over = split_overrides(overrides)
    s = as_spec(spec, spec_over)
    tg = check(s)
    loaded = load_recipe(s, config, recipe_over)
    if nproc is not None and nproc > 1:
        if dd.world_from_env().distributed:
            raise TrainError("--nproc starts its own workers; under torchrun or srun leave it out")
        from graphc.train.launch import launch

        kwargs = {"spec": spec, "run_dir": run_dir, "config": config, "overrides": list(overrides), "resume": resume,
                  "init": init, "quiet": quiet, "force": force}
        result: TrainResult = launch(kwargs, nproc, debug)
        return result
    trainer = Trainer(tg, loaded, Path(run_dir), init=init, quiet=quiet)
    trainer.overrides = list(overrides)
    return trainer.run(resume=resume, force=force)


def _write_bytes(path: Path, data: bytes) -> None:
    write_with(path, lambda tmp: tmp.write_bytes(data))


def _read_json(path: Path) -> dict[str, Any] | None:
    """A previous run's JSON file, or None when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


__all__ = ["Recipe", "TrainResult", "Trainer", "train"]
