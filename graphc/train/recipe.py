"""The training recipe: pydantic models of the ``train:`` section (or a separate YAML file).

The recipe is validated like a spec (``extra="forbid"``, every problem reported at once with
its ``FILE:LINE:COL``), so a typo in ``train.optimizer.lr`` points at its line.  This module
never imports torch: ``graphc check`` and the recipe tests stay fast.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from graphc.data.images import ImagesCfg
from graphc.data.tables import TableCfg
from graphc.data.text import TextCfg
from graphc.errors import Pos, SpecError
from graphc.spec.load import Spec, read_bounded
from graphc.spec.overrides import apply_overrides
from graphc.spec.pydantic_errors import report_validation_error
from graphc.spec.yaml_loader import load_yaml, locate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataCfg(_Strict):
    """Where examples come from, how they map onto the spec's inputs, and how they are loaded.

    Exactly one source: ``dataset`` (a built-in set or an array file), ``images`` (an image
    folder), ``table`` or ``text``.
    """

    dataset: str | None = Field(None, description="digits | wine | iris | breast_cancer | stdlib_chars | synthetic_regression | "
                                "synthetic_classification | synthetic_sequence | a path to .npz/.csv/.safetensors")
    images: ImagesCfg | None = Field(None, description="an image folder: root/<class>/*.png (or root/train|val|test/<class>/...)")
    split: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="train/val/test fractions (seeded shuffle)")
    map: dict[str, str] = Field({}, description="spec input or target name -> dataset array/column name")
    samples: PositiveInt = Field(2048, description="synthetic sets: number of examples")
    classes: PositiveInt = Field(4, description="synthetic_classification: number of classes")
    max_chars: PositiveInt = Field(1_000_000, description="stdlib_chars: corpus size bound")
    seq_len: PositiveInt | None = Field(None, description="sequence sets: window length (default: the spec's example T)")
    seed: int | None = Field(None, description="split/shuffle seed (default: the recipe's seed)")
    workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes (0: load in the training process)")
    prefetch: PositiveInt = Field(2, le=64, description="batches each worker loads ahead")
    table: TableCfg | None = Field(None, description="a CSV/Parquet/JSONL table: columns -> inputs and targets (docs/data.md)")
    text: TextCfg | None = Field(None, description="a text corpus and its tokenizer, or text classification (docs/data.md)")

    @model_validator(mode="after")
    def _fractions(self) -> DataCfg:
        if any(f < 0 for f in self.split) or abs(sum(self.split) - 1.0) > 1e-6 or self.split[0] <= 0:
            raise ValueError(f"split fractions must be >= 0, sum to 1 and leave a training part, got {list(self.split)}")
        return self

    @model_validator(mode="after")
    def _one_source(self) -> DataCfg:
        given = [k for k in SOURCE_KINDS if getattr(self, k, None) is not None]
        if len(given) != 1:
            have = f" (got {', '.join(given)})" if given else ""
            raise ValueError(f"give exactly one data source: {', '.join(SOURCE_KINDS)}{have}")
        return self


SOURCE_KINDS = ("dataset", "images", "table", "text")  # DataCfg fields naming where examples come from


LossType = Literal["cross_entropy", "mse", "mae", "bce"]


class LossTerm(_Strict):
    """One term of the loss: ``weight * type(output, target)``."""

    type: LossType
    output: str = Field(description="a spec output name")
    target: str = Field(description="a dataset array name (e.g. label)")
    weight: float = 1.0
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


MetricType = Literal["accuracy", "top_k", "perplexity", "mse", "mae", "f1"]


class MetricCfg(_Strict):
    """A metric on one output (default: the first loss term's output and target)."""

    type: MetricType
    k: PositiveInt = Field(5, description="top_k: k")
    output: str | None = None
    target: str | None = None

    @property
    def column(self) -> str:
        """The metrics.csv column name (without the ``val_`` prefix)."""
        return f"top{self.k}" if self.type == "top_k" else self.type


class OptimizerCfg(_Strict):
    """sgd / adam / adamw; adamw never decays norms, biases or embeddings."""

    type: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleCfg(_Strict):
    """Learning-rate schedule: linear warmup, then the named shape."""

    type: Literal["constant", "cosine", "linear", "step", "plateau"] = "constant"
    warmup: int = Field(0, ge=0, description="warmup steps (linear from 0)")
    min_lr: float = Field(0.0, ge=0.0, description="cosine/linear: final lr as a fraction of lr")
    step_size: PositiveInt = Field(1000, description="step: decay every N steps")
    gamma: float = Field(0.1, gt=0.0, description="step/plateau: decay factor")
    patience: int = Field(2, ge=0, description="plateau: evaluations without improvement")


class EarlyStopCfg(_Strict):
    """Stop when ``metric`` has not improved for ``patience`` evaluations."""

    patience: PositiveInt = 5
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    min_delta: float = Field(0.0, ge=0.0)


class CheckpointCfg(_Strict):
    """Checkpoints are written at evaluations; the last ``keep`` and the best are kept."""

    keep: PositiveInt = 2
    every: PositiveInt = Field(1, description="write a checkpoint every N evaluations")


class LoraCfg(_Strict):
    """Fine-tune with low-rank adapters (LoRA): the model's weights are frozen, and each
    targeted linear layer learns ``W + (alpha / rank) * B @ A`` with A, B of rank ``rank``."""

    targets: list[str] = Field(min_length=1, description="glob patterns over linear layers' module paths, e.g. '*.attn.qkv'")
    rank: PositiveInt = 8
    alpha: PositiveFloat = 16.0
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter's input")
    trainable: list[str] = Field([], description="glob patterns of parameters that stay trainable too (e.g. 'head.*')")


class ParamGroupCfg(_Strict):
    """Discriminative learning rates: parameters whose node path matches ``match`` (a glob,
    e.g. ``body.*``) train at ``lr_scale`` x the schedule's lr, with their own weight decay."""

    match: str = Field(description="glob over parameter paths (node path + parameter), e.g. 'body.*'")
    lr_scale: float = Field(1.0, ge=0.0, description="multiplies the scheduled learning rate")
    weight_decay: float | None = Field(None, ge=0.0, description="default: the optimizer's (never on norms, biases, embeddings)")


class UnfreezeCfg(_Strict):
    """Gradual unfreezing: parameters matching ``match`` stay frozen until optimizer step ``at_step``."""

    at_step: int = Field(ge=0, description="the first optimizer step that updates them")
    match: str = Field(description="glob over parameter paths, e.g. 'body.11.*'")


class DistributedCfg(_Strict):
    """How the processes of a multi-process run (``--nproc N``, torchrun, SLURM) share the model."""

    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="ddp: every process holds the whole model; "
                                            "fsdp: parameters, gradients and optimizer state sharded per block (FSDP2)")
    timeout: PositiveInt = Field(600, description="seconds a collective waits for the other processes before the run stops")


class Recipe(_Strict):
    """The whole recipe; ``epochs`` or ``steps`` says how long to train."""

    data: DataCfg
    loss: LossTerm | list[LossTerm]
    metrics: list[MetricType | MetricCfg] = []
    optimizer: OptimizerCfg = OptimizerCfg()
    schedule: ScheduleCfg = ScheduleCfg()
    epochs: PositiveInt | None = None
    steps: PositiveInt | None = None
    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt | None = Field(None, description="default: 4 x batch_size")
    grad_accum: PositiveInt = Field(1, description="micro-batches per optimizer step")
    clip_grad: PositiveFloat | None = Field(None, description="max global grad norm")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: Literal["none", "model", "regional", "auto"] = "none"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    seed: int = 0
    eval_every: PositiveInt | None = Field(None, description="steps between evaluations (default: once per epoch)")
    eval_batches: PositiveInt | None = Field(None, description="cap on validation batches per evaluation")
    early_stopping: EarlyStopCfg | None = None
    checkpoint: CheckpointCfg = CheckpointCfg()
    max_bad_steps: PositiveInt = Field(10, description="non-finite losses skipped before the run stops")
    best_metric: str = Field("val_loss", description="metrics.csv column that decides best.safetensors")
    best_mode: Literal["min", "max"] = "min"
    lora: LoraCfg | None = Field(None, description="fine-tune with LoRA adapters (merged into the saved weights)")
    param_groups: list[ParamGroupCfg] = Field([], description="per-glob lr scale and weight decay (first match wins)")
    unfreeze: list[UnfreezeCfg] = Field([], description="parameters frozen until a step (gradual unfreezing)")
    distributed: DistributedCfg = Field(DistributedCfg(), description="strategy when run on more than one process")
    activation_checkpointing: list[str] = Field([], description="block calls (names or globs, e.g. 'body' or 'body.*') whose "
                                                "activations are recomputed in backward instead of kept")

    @model_validator(mode="after")
    def _length(self) -> Recipe:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of 'epochs' or 'steps'")
        if self.unfreeze and self.lora is not None:
            raise ValueError("'unfreeze' and 'lora' do not combine (LoRA freezes the base weights; list them in lora.trainable)")
        if self.lora is not None and self.distributed.strategy == "fsdp":
            raise ValueError("'lora' does not combine with distributed.strategy fsdp (use ddp: adapters are small)")
        return self

    @property
    def loss_terms(self) -> list[LossTerm]:
        return self.loss if isinstance(self.loss, list) else [self.loss]

    @property
    def metric_cfgs(self) -> list[MetricCfg]:
        """Metrics with output/target filled in from the first loss term."""
        first = self.loss_terms[0]
        out = []
        for m in self.metrics:
            cfg = MetricCfg(type=m) if isinstance(m, str) else m
            out.append(cfg.model_copy(update={"output": cfg.output or first.output, "target": cfg.target or first.target}))
        return out


class LoadedRecipe(BaseModel):
    """A validated recipe plus where it came from (for positioned data errors)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    recipe: Recipe
    raw: Any
    prefix: tuple[str, ...]
    file: str

    def pos(self, *path: str | int) -> Pos:
        return locate(self.raw, tuple(path), default=Pos(self.file))

    def where(self, *path: str | int) -> str:
        return ".".join(str(p) for p in (*self.prefix, *path))


def load_recipe(spec: Spec, config: str | Path | None = None, overrides: dict[str, str] | None = None) -> LoadedRecipe:
    """Read the recipe from ``config`` (a YAML file) or else the spec's ``train:`` section.

    The spec's section is used with its params substituted (``lr: "${lr}"`` works);
    ``overrides`` (``train.KEY=VALUE`` from ``--set``) are applied before validation.
    Raises :class:`SpecError` with file positions for every problem at once.
    """
    if config is not None:
        path = Path(config)
        try:
            data = read_bounded(path)  # a regular file of bounded size: a FIFO or /dev/zero is refused at once
        except OSError as e:
            raise SpecError(f"cannot read recipe: {e.strerror}", Pos(str(path))) from None
        root = load_yaml(data, str(path))
        raw = root.get("train", root) if isinstance(root, dict) else root
        values = raw
        file = str(path)
    else:
        raw, values, file = spec.raw.get("train"), spec.doc.train, spec.file
        if raw is None or values is None:
            raise SpecError("no training recipe: add a 'train:' section to the spec or pass --config RECIPE.yaml", Pos(spec.file))
    if not isinstance(raw, dict) or not isinstance(values, dict):
        raise SpecError("train: expected a mapping", getattr(raw, "pos", Pos(file)))
    values = copy.deepcopy(dict(values))
    apply_overrides(values, overrides or {}, create=True, prefix="train.")
    try:
        recipe = Recipe.model_validate(values)
    except ValidationError as e:
        raise SpecError.many(report_validation_error(e, raw, ("train",), model=Recipe)) from None
    return LoadedRecipe(recipe=recipe, raw=raw, prefix=("train",), file=file)
