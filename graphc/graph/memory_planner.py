"""The memory planner: per-process peak training memory from the inferred shapes alone.

``graphc summary SPEC --train`` and ``graphc train`` (before it allocates anything on a GPU)
ask one question: how many bytes does one optimizer step hold at its worst moment?  The
answer is built the way eager PyTorch spends memory, from the typed graph and the op
registry, without torch and without allocating the model:

* **parameters** (and buffers) in fp32, **gradients** of the trainable ones (fp32, created
  by the backward pass; ``zero_grad(set_to_none=True)`` frees them before each forward),
  **optimizer state** (AdamW/Adam: two fp32 moments; SGD: one momentum buffer);
* **saved activations**: each op says what its backward keeps (``OpArgs.saves``: inputs,
  output, extra tensors such as statistics or masks) and whether its output is a view of
  its input (``OpArgs.view_of``); a tensor kept by several ops, or through a view, is one
  tensor and is counted once.  Under bf16/fp16 autocast each value takes the precision its
  op runs in (``OpArgs.autocast``), and an op that casts its input keeps the cast copy;
* **workspace**: values the forward pass has not freed yet, activation gradients during
  the backward pass, the loss (a cross-entropy-style loss keeps its log-probabilities, fp32
  and the size of each output), and the optimizer step's temporaries.

The step is simulated in three phases (forward, backward, optimizer step) in graph order;
the peak is the largest total of any moment, and :class:`MemoryPlan` reports both the
full size of each part and what of it is live at the peak.  Distribution and activation
checkpointing change the parts, not the method: FSDP divides parameters, gradients and
optimizer state by the world size and adds the largest unit's gathered parameters (and
their unsharded gradients in the backward pass; units are the top-level block instances
plus the root); DDP adds its gradient buckets (one more copy of the gradients);
checkpointing keeps only each checkpointed block instance's inputs and recomputes one
instance at a time in the backward pass.

What it does not see: allocator fragmentation and caching (on CUDA, reserved memory runs
above allocated memory), the CUDA context (~0.3-1 GB, not part of ``mem_get_info``'s free
memory either), kernel workspaces (cuBLAS, cuDNN) and ``torch.compile``'s own choices of what
to keep.  docs/train.md ("Memory planner") and docs/benchmarks.md compare it with measurements.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field, replace
from fnmatch import fnmatchcase
from math import prod
from typing import Any, Literal

from graphc.graph.infer import TypedGraph
from graphc.shapes import DTYPE_BYTES, FLOAT_DTYPES
from graphc.spec.ir import FlatNode, Ref

Precision = Literal["fp32", "bf16", "fp16"]
PARTS = ("parameters", "gradients", "optimizer_state", "activations", "batch", "workspace")


@dataclass(frozen=True)
class TrainSetup:
    """How the model is trained: what the planner needs from the recipe and the launcher.

    ``checkpoint``: True checkpoints every top-level block instance; a collection names the
    block calls or block definitions to checkpoint.  ``device`` picks the kernels' costs
    (a convolution's workspace differs between CPU and CUDA).
    """

    batch: int | None = None  # the batch size (None: the spec's example size)
    precision: Precision = "fp32"
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = 0.9  # sgd only: 0 keeps no momentum buffer
    strategy: Literal["none", "ddp", "fsdp"] = "none"
    world: int = 1
    checkpoint: bool | tuple[str, ...] = False
    grad_accum: int = 1
    device: Literal["cpu", "cuda"] = "cuda"

    @classmethod
    def from_recipe(cls, recipe: Any, device: str = "cuda", world: int = 1) -> TrainSetup:
        """The setup a training recipe (``graphc.train.recipe.Recipe``) describes.

        Read by attribute, as the planner sits below the train package: batch_size,
        precision, optimizer, grad_accum, and where the recipe has them ``distributed.strategy``
        and ``activation_checkpointing`` (block names, or true for every block).
        """
        dist = getattr(recipe, "distributed", None)
        strategy: Any = getattr(dist, "strategy", None) or "none"
        ckpt = getattr(recipe, "activation_checkpointing", None)
        checkpoint: bool | tuple[str, ...] = ckpt if isinstance(ckpt, bool) else tuple(ckpt or ())
        return cls(batch=recipe.batch_size, precision=recipe.precision, optimizer=recipe.optimizer.type,
                   momentum=recipe.optimizer.momentum, strategy=strategy if world > 1 else "none", world=world,
                   checkpoint=checkpoint, grad_accum=recipe.grad_accum, device="cpu" if device == "cpu" else "cuda")

    def describe(self) -> str:
        parts = [f"batch {self.batch}", self.precision, self.optimizer]
        if self.strategy != "none":
            parts.append(f"{self.strategy} x {self.world}")
        if self.checkpoint is True:
            parts.append("checkpointing")
        elif self.checkpoint:
            parts.append("checkpointing " + ", ".join(self.checkpoint))
        if self.grad_accum > 1:
            parts.append(f"grad_accum {self.grad_accum}")
        return ", ".join(parts) + f" ({self.device} kernels)"


@dataclass
class MemoryPlan:
    """Estimated per-process training memory, in bytes.

    ``sizes``: each part at its largest (all gradients, all saved activations);
    ``at_peak``: what of each part is live at the peak moment, which sum to ``peak``;
    ``phase``: when the peak happens (``forward``, ``loss``, ``backward at NODE``,
    ``optimizer step``); ``largest``: the biggest savers of activations, by top-level scope.
    """

    setup: TrainSetup
    sizes: dict[str, int]
    at_peak: dict[str, int]
    peak: int
    phase: str
    largest: list[tuple[str, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["setup"]["checkpoint"] = self.setup.checkpoint if isinstance(self.setup.checkpoint, bool) else list(self.setup.checkpoint)
        d["largest"] = [{"scope": s, "bytes": b} for s, b in self.largest]
        return d


# --- values -----------------------------------------------------------------------------------


@dataclass
class _Value:
    """One tensor's storage: its bytes at the run's precision, and whether it needs a gradient."""

    nbytes: int
    itemsize: int
    grad: bool


@dataclass
class _Node:
    """What the simulation needs of one op node."""

    name: str
    index: int
    keeps: set[Ref]  # storages this node's backward keeps
    extra: int  # bytes it keeps itself
    outs: list[Ref]  # storages of its outputs
    grad_ins: list[Ref]  # storages of inputs that receive a gradient
    param_grad: int  # bytes of gradients of the parameters it owns (trainable)
    view: bool
    unit: str  # its top-level block instance ("" = the root)
    work: int = 0  # bytes its kernels allocate and free within a call


class _Graph:
    """The typed graph at concrete sizes and one precision: storages, keepers, units."""

    def __init__(self, tg: TypedGraph, sizes: dict[str, int], precision: Precision) -> None:
        self.tg, self.sizes, self.low = tg, sizes, precision != "fp32"
        self.values: dict[Ref, _Value] = {}
        self.base: dict[Ref, Ref] = {}
        self.nodes: list[_Node] = []
        self.units = _units(tg)
        self.batch = 0
        self.inputs: set[Ref] = set()  # the batch: live all step long, never an activation
        tied = {(n, p) for n, ties in tg.ties.items() for p in ties}
        for name in tg.order:
            node = tg.flat.nodes[name]
            if node.kind == "input":
                self._input(node)
            elif node.kind == "port" and node.inputs and node.inputs[0] is not None:
                self.base[Ref(name, 0)] = self.base[node.inputs[0]]
            elif node.kind == "op":
                self._op(node, tied)

    def _input(self, node: FlatNode) -> None:
        t = self.tg.types[Ref(node.name, 0)]
        size = DTYPE_BYTES.get(t.dtype, 4)
        nbytes = prod(t.concrete(self.sizes)) * size
        ref = Ref(node.name, 0)
        self.values[ref], self.base[ref] = _Value(nbytes, size, False), ref
        self.batch += nbytes
        self.inputs.add(ref)

    def _itemsize(self, node: FlatNode, dtype: str, ins: list[Ref | None]) -> int:
        """Bytes per element of an op's output under autocast (the spec's dtype in fp32)."""
        if dtype not in FLOAT_DTYPES or not self.low:
            return DTYPE_BYTES.get(dtype, 4)
        mode = node.args.autocast
        if mode == "lower":
            return 2
        if mode == "float32":
            return 4
        floats = [self.values[self.base[r]].itemsize for r in ins if r is not None and self.tg.types[r].dtype in FLOAT_DTYPES]
        return max(floats, default=DTYPE_BYTES.get(dtype, 4))

    def _op(self, node: FlatNode, tied: set[tuple[str, str]]) -> None:
        tg, args = self.tg, node.args
        ins = list(node.inputs)
        in_shapes = [tg.types[r].concrete(self.sizes) if r is not None else None for r in ins]
        out_types = tg.out_types(node)
        out_shapes = [t.concrete(self.sizes) for t in out_types]
        params = tg.params.get(node.name, {})
        trainable = 0 if node.freeze else sum(prod(s) for p, s in params.items() if (node.name, p) not in tied)
        grad_in = any(r is not None and self.values[self.base[r]].grad for r in ins)
        needs_grad = grad_in or (trainable > 0)
        view = args.view_of()
        outs: list[Ref] = []
        for i, (t, shape) in enumerate(zip(out_types, out_shapes, strict=True)):
            ref = Ref(node.name, i)
            if view is not None and view < len(ins) and ins[view] is not None:
                self.base[ref] = self.base[ins[view]]  # type: ignore[index]
            else:
                size = self._itemsize(node, t.dtype, ins)
                self.values[ref] = _Value(prod(shape) * size, size, needs_grad and t.dtype in FLOAT_DTYPES)
                self.base[ref] = ref
            outs.append(self.base[ref])
        unit = self.units.get(node.name, "")
        if not needs_grad:  # no backward: its outputs only live in the forward pass
            self.nodes.append(_Node(node.name, len(self.nodes), set(), 0, outs, [], 0, view is not None, unit))
            return
        itemsize = self.values[outs[0]].itemsize if outs else 4
        saved = args.saves(in_shapes, out_shapes, itemsize)
        keeps: set[Ref] = set()
        extra = saved.extra
        for i in saved.inputs:
            r = ins[i] if i < len(ins) else None
            if r is None:
                continue
            v = self.values[self.base[r]]
            cast = self._cast_size(node, tg.types[r].dtype, v.itemsize)
            if cast:  # autocast keeps the cast copy, not the original
                extra += v.nbytes // v.itemsize * cast
            elif self.base[r] not in self.inputs:
                keeps.add(self.base[r])
        if saved.output and outs:
            keeps.add(outs[0])
        if self.low and args.autocast == "lower":
            extra += 2 * sum(prod(s) for s in params.values())  # the weights' low-precision copies
        grad_ins = [self.base[r] for r in ins if r is not None and self.values[self.base[r]].grad]
        work = args.workspace(in_shapes, out_shapes, itemsize)
        self.nodes.append(_Node(node.name, len(self.nodes), keeps, extra, outs, grad_ins, 4 * trainable, view is not None, unit, work))

    def _cast_size(self, node: FlatNode, dtype: str, itemsize: int) -> int:
        """Itemsize of the copy autocast makes of an input of ``itemsize`` (0: no copy)."""
        if not self.low or dtype not in FLOAT_DTYPES:
            return 0
        mode = node.args.autocast
        if mode == "lower" and itemsize > 2:
            return 2
        if mode == "float32" and itemsize < 4:
            return 4
        return 0

    def nbytes(self, ref: Ref) -> int:
        return self.values[ref].nbytes


def _units(tg: TypedGraph) -> dict[str, str]:
    """Each node's top-level block instance (the unit FSDP shards and checkpointing wraps)."""
    inst = tg.flat.instances
    out: dict[str, str] = {}
    for node in tg.flat.nodes.values():
        scope = node.scope
        while scope and inst[scope].scope:
            scope = inst[scope].scope
        if scope:
            out[node.name] = scope
    return out


def _checkpointed(tg: TypedGraph, checkpoint: bool | Collection[str]) -> set[str]:
    """The top-level instances to checkpoint: those the spec marks (``checkpoint: true`` on a
    call), plus all of them, or those a name selects: a block definition (``decoder``) or
    a call pattern read as the trainer reads ``train.activation_checkpointing`` (``body``,
    ``body.1``, ``body.*``)."""
    tops = [i for i in tg.flat.instances.values() if not i.scope]
    if checkpoint is True:
        return {i.name for i in tops}
    names = set(checkpoint or ())

    def selected(name: str, block: str) -> bool:
        return any(block == p or fnmatchcase(name, p) or fnmatchcase(name, f"{p}.*") for p in names)

    return {i.name for i in tops if i.checkpoint or selected(i.name, i.block)}


# --- the simulation ------------------------------------------------------------------------------


@dataclass
class _Moment:
    """Bytes live at one moment, by part."""

    phase: str
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


class _Simulation:
    """Forward, loss, backward and optimizer step of one training step, in graph order."""

    def __init__(self, tg: TypedGraph, setup: TrainSetup, sizes: dict[str, int]) -> None:
        self.g = _Graph(tg, sizes, setup.precision)
        self.setup = setup
        self.ckpt = _checkpointed(tg, setup.checkpoint)
        world = setup.world if setup.strategy == "fsdp" else 1
        params = sum(prod(s) for n in tg.flat.op_nodes() for p, s in tg.params.get(n.name, {}).items() if p not in tg.ties.get(n.name, {}))
        buffers = sum(prod(s) for n in tg.flat.op_nodes() for s in n.args.buffers(*tg.in_types(n)).values())  # type: ignore[arg-type]
        self.trainable = sum(n.param_grad for n in self.g.nodes)
        self.params = (4 * params + 4 * buffers) // world
        self.grads = self.trainable // world
        self.state = self._state() // world
        self.buckets = self.trainable if setup.strategy == "ddp" else 0
        self.gathered = self._gathered(tg) if setup.strategy == "fsdp" else 0
        self.outputs = [self.g.base[r] for r in tg.flat.outputs.values()]

    def _state(self) -> int:
        if self.setup.optimizer in ("adam", "adamw"):
            return 2 * self.trainable
        return self.trainable if self.setup.momentum > 0 else 0

    def _gathered(self, tg: TypedGraph) -> int:
        """FSDP: the root unit's parameters plus the largest block instance's, unsharded
        (in bf16 under a bf16 mixed-precision policy)."""
        per_unit: dict[str, int] = {}
        tied = {(n, p) for n, ties in tg.ties.items() for p in ties}
        for n in tg.flat.op_nodes():
            count = sum(prod(s) for p, s in tg.params.get(n.name, {}).items() if (n.name, p) not in tied)
            unit = self.g.units.get(n.name, "")
            per_unit[unit] = per_unit.get(unit, 0) + count
        size = 2 if self.setup.precision != "fp32" else 4
        root = per_unit.pop("", 0)
        return size * (root + max(per_unit.values(), default=0))

    def base(self, grads: int = 0, workspace: int = 0, activations: int = 0) -> dict[str, int]:
        return {"parameters": self.params, "gradients": grads, "optimizer_state": self.state,
                "activations": activations, "batch": self.g.batch, "workspace": workspace}

    def run(self) -> tuple[list[_Moment], int]:
        """Every moment worth comparing, and the bytes of activations kept at the forward's end."""
        kept, keepers, extras = self._keeps()
        forward = self._forward(kept, extras)
        saved = sum(self.g.nbytes(r) for r in kept) + sum(extras.values())
        loss = sum(prod(self.g.tg.types[r].concrete(self.g.sizes)) * 4 for r in self.g.tg.flat.outputs.values())
        acc = self.grads if self.setup.grad_accum > 1 else 0
        # cross-entropy: log-probabilities (kept), the gradient arriving at them, the gradient they pass on
        at_loss = _Moment("loss", self.base(acc + self.buckets, 2 * loss + self.gathered, saved + loss))
        return [forward, at_loss, self._backward(kept, keepers, extras), self._step()], saved + loss

    def _keeps(self) -> tuple[set[Ref], dict[Ref, int], dict[str, int]]:
        """Storages kept for the backward pass, each one's earliest keeper (it is freed after
        that node's backward), and the extra bytes per node.  A checkpointed instance keeps
        only its inputs (for the recompute), as its first node."""
        g = self.g
        kept: set[Ref] = set()
        keepers: dict[Ref, int] = {}
        extras: dict[str, int] = {}
        for n in g.nodes:
            if n.unit in self.ckpt:
                continue
            for r in n.keeps:
                kept.add(r)
                keepers[r] = min(keepers.get(r, n.index), n.index)
            if n.extra:
                extras[n.name] = n.extra
        for unit in self.ckpt:
            first = next((n for n in g.nodes if n.unit == unit), None)
            for port in g.tg.flat.instances[unit].inputs if first is not None else []:
                r = g.base[Ref(port, 0)]
                kept.add(r)
                keepers[r] = min(keepers.get(r, first.index), first.index)  # type: ignore[union-attr]
        return kept, keepers, extras

    def _forward(self, kept: set[Ref], extras: dict[str, int]) -> _Moment:
        """The forward's worst moment: a value lives from its node to its last reader, or to
        its backward when it is kept."""
        g = self.g
        last: dict[Ref, int] = {}
        reads: dict[int, set[Ref]] = {}
        for n in g.nodes:
            ins = {g.base[x] for x in g.tg.flat.nodes[n.name].inputs if x is not None}
            reads[n.index] = ins | set(n.outs)
            for r in ins:
                last[r] = n.index
        outputs = set(self.outputs)
        acc = self.grads if self.setup.grad_accum > 1 else 0
        live: set[Ref] = set()
        held = loose = 0
        peak = _Moment("forward", self.base())
        for n in g.nodes:
            for r in n.outs:
                if r not in live:
                    live.add(r)
                    held, loose = (held + g.nbytes(r), loose) if r in kept else (held, loose + g.nbytes(r))
            held += extras.get(n.name, 0)
            m = _Moment(f"forward at {n.name}", self.base(acc + self.buckets, loose + n.work + self.gathered, held))
            peak = m if m.total > peak.total else peak
            for r in reads[n.index]:
                if r in live and r not in kept and r not in outputs and last.get(r, -1) <= n.index:
                    live.discard(r)
                    loose -= g.nbytes(r)
        return peak

    def _backward(self, kept: set[Ref], keepers: dict[Ref, int], extras: dict[str, int]) -> _Moment:
        """Reverse graph order: gradients appear at a node's inputs and leave with its outputs;
        a kept storage is freed after its earliest keeper; a checkpointed instance is
        recomputed (its own keeps come back) when the backward pass reaches it."""
        g = self.g
        freed: dict[int, list[Ref]] = {}
        for r, k in keepers.items():
            freed.setdefault(k, []).append(r)
        live_kept = set(kept)
        held = sum(g.nbytes(r) for r in kept) + sum(extras.values())
        grads: dict[Ref, int] = {r: g.nbytes(r) for r in self.outputs if g.values[r].grad}
        flowing = sum(grads.values())
        world = self.setup.world if self.setup.strategy == "fsdp" else 1
        param_grads = self.grads if self.setup.grad_accum > 1 else 0
        recomputed: set[str] = set()
        peak = _Moment("backward", self.base())
        for n in reversed(g.nodes):
            if n.unit in self.ckpt and n.unit not in recomputed:
                recomputed.add(n.unit)
                held += self._recompute(n.unit, live_kept, freed, extras)
            targets = set() if n.view else set(n.grad_ins)
            new = sum(g.nbytes(r) for r in targets if r not in grads)
            accumulate = max((g.nbytes(r) for r in targets if r in grads), default=0)
            param_grads += n.param_grad // world
            work = flowing + new + accumulate + n.work + 2 * self.gathered
            m = _Moment(f"backward at {n.name}", self.base(param_grads + self.buckets, work, held))
            peak = m if m.total > peak.total else peak
            for r in n.grad_ins:
                if r not in grads:
                    grads[r] = g.nbytes(r)
                    flowing += grads[r]
            for r in [] if n.view else n.outs:
                if r not in n.grad_ins and r in grads:
                    flowing -= grads.pop(r)
            held -= extras.get(n.name, 0)
            for r in freed.pop(n.index, []):
                if r in live_kept:
                    live_kept.discard(r)
                    held -= g.nbytes(r)
        return peak

    def _recompute(self, unit: str, live_kept: set[Ref], freed: dict[int, list[Ref]], extras: dict[str, int]) -> int:
        """Bring back what a checkpointed instance keeps; returns the bytes added."""
        added = 0
        for n in self.g.nodes:
            if n.unit != unit:
                continue
            for r in n.keeps - live_kept:
                live_kept.add(r)
                freed.setdefault(n.index, []).append(r)
                added += self.g.nbytes(r)
            if n.extra:
                extras[n.name] = n.extra
                added += n.extra
        return added

    def _step(self) -> _Moment:
        """The optimizer step: everything but the activations.  graphc's Adam and AdamW use
        torch's fused kernel on CPU and CUDA (graphc/train/optim.py), which updates each
        parameter in place with no tensor-sized temporaries (the for-loop and foreach
        kernels would add up to one temporary the size of all parameters); SGD's momentum
        buffer is optimizer state, already counted."""
        return _Moment("optimizer step", self.base(self.grads + self.buckets, 0))


# --- the public entry points ---------------------------------------------------------------------


def batch_symbol(tg: TypedGraph) -> str | None:
    """The symbolic dim of the first input's leading axis (the batch), None when it is fixed."""
    first = next(iter(tg.flat.spec.doc.inputs.values()), None)
    if first is None or not first.shape:
        return None
    lead = first.shape[0]
    return lead if isinstance(lead, str) and lead in tg.example else None


def plan_memory(tg: TypedGraph, setup: TrainSetup = TrainSetup()) -> MemoryPlan:
    """Estimate one process's peak memory for a training step of ``tg`` under ``setup``.

    Example:
        >>> tg = graphc.check("specs/gpt_mini.yaml")
        >>> plan = plan_memory(tg, TrainSetup(batch=16, precision="bf16"))
        >>> plan.peak, plan.phase
    """
    sym = batch_symbol(tg)
    sizes = dict(tg.example)
    if sym is not None and setup.batch is not None:
        sizes[sym] = setup.batch
    setup = replace(setup, batch=sizes.get(sym, 1) if sym is not None else 1)
    sim = _Simulation(tg, setup, sizes)
    moments, saved = sim.run()
    peak = max(moments, key=lambda m: m.total)
    sizes_out = {"parameters": sim.params, "gradients": sim.grads + sim.buckets, "optimizer_state": sim.state,
                 "activations": max(saved, *(m.parts["activations"] for m in moments)), "batch": sim.g.batch, "workspace": max(m.parts["workspace"] for m in moments)}
    return MemoryPlan(setup, sizes_out, dict(peak.parts), peak.total, peak.phase, _largest(sim))


def _largest(sim: _Simulation, top: int = 5) -> list[tuple[str, int]]:
    """The top-level scopes keeping the most activations (a storage counts at its first
    keeper; checkpointed instances keep only their inputs, counted where they are made)."""
    seen: set[Ref] = set()
    by: dict[str, int] = {}
    for n in sim.g.nodes:
        if n.unit in sim.ckpt:
            continue
        scope = n.unit or n.name
        fresh = [r for r in n.keeps if r not in seen]
        seen.update(fresh)
        by[scope] = by.get(scope, 0) + sum(sim.g.nbytes(r) for r in fresh) + n.extra
    return sorted(((k, v) for k, v in by.items() if v), key=lambda kv: -kv[1])[:top]


def ways_to_fit(tg: TypedGraph, setup: TrainSetup, limit: int) -> list[str]:
    """Changes that bring the estimate under ``limit`` bytes, cheapest first: a smaller batch
    (with gradient accumulation keeping the global batch), activation checkpointing, FSDP."""
    ways: list[str] = []
    batch = plan_memory(tg, setup).setup.batch or 1
    b = batch // 2
    while b >= 1:
        if plan_memory(tg, replace(setup, batch=b)).peak <= limit:
            accum = -(-batch * setup.grad_accum // b)
            ways.append(f"batch_size {b} with grad_accum {accum}, the same global batch (--set train.batch_size={b} --set train.grad_accum={accum})")
            break
        b //= 2
    if not setup.checkpoint and tg.flat.instances and plan_memory(tg, replace(setup, checkpoint=True)).peak <= limit:
        ways.append("activation checkpointing of every block (about a third more compute)")
    if setup.strategy != "fsdp":
        for world in (2, 4, 8, 16, 32, 64):
            if plan_memory(tg, replace(setup, strategy="fsdp", world=world)).peak <= limit:
                ways.append(f"fsdp on {world} processes (distributed: {{strategy: fsdp}}, --nproc {world})")
                break
    return ways


def iter_parts(plan: MemoryPlan) -> Iterator[tuple[str, int, int]]:
    """(label, full size, live at peak) per part, for tables."""
    labels = {"parameters": "parameters + buffers", "gradients": "gradients", "optimizer_state": "optimizer state",
              "activations": "saved activations", "batch": "input batch", "workspace": "workspace (transient)"}
    for key in PARTS:
        yield labels[key], plan.sizes[key], plan.at_peak[key]
