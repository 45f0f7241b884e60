"""Training on more than one process: who we are, the process group, DDP / FSDP2, collectives.

A run is distributed when its environment says so: ``torchrun`` (and ``graphc train
--nproc N``, which starts its workers through the same elastic launcher) sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT``; a SLURM job step (``srun``) sets
``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` and ``SLURM_LOCALID``.  Anything else is one
process, and every helper here is then a no-op, so the loop has one code path.

The loop talks to a :class:`Strategy`, which hides what differs between one process, DDP
(every rank holds the whole model, gradients averaged) and FSDP2 (``fully_shard`` on every
block instance, then the root: parameters, gradients and optimizer state are sharded and
gathered per block while it runs).  Which examples a rank reads is
:func:`graphc.data.loader.shard` of each global micro-batch (the StepSampler applies it).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import fx, nn

from graphc.errors import NO_FILE, Diagnostic, GraphcError, Pos, TrainError, first_line

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the run (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    source: str = "single"  # single | torchrun | slurm
    master: tuple[str, int] | None = None  # rendezvous address (SLURM only: torchrun's is in env://)

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the run folder and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """Read the launcher's variables: torchrun's first, else a SLURM job step's, else one process."""
    env = os.environ if env is None else env
    try:
        if "RANK" in env and "WORLD_SIZE" in env:
            return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")), "torchrun")
        if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:  # srun sets the STEP variables; a bare sbatch shell does not
            size = int(env["SLURM_STEP_NUM_TASKS"])
            port = int(env.get("MASTER_PORT", 20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
            return World(int(env["SLURM_PROCID"]), size, int(env.get("SLURM_LOCALID", "0")), "slurm",
                         (env.get("MASTER_ADDR", "localhost"), port))
    except ValueError as e:
        raise TrainError(f"distributed environment variables are not integers: {e}") from None
    return World()


def device_for(world: World, device: torch.device) -> torch.device:
    """One GPU per process on a node: rank ``local_rank`` takes ``cuda:local_rank``."""
    if device.type != "cuda" or not world.distributed:
        return device
    dev = torch.device("cuda", world.local_rank % max(torch.cuda.device_count(), 1))
    torch.cuda.set_device(dev)
    return dev


def init(world: World, device: torch.device, timeout_s: int) -> None:
    """Join the process group: nccl on CUDA, gloo on CPU; ``timeout_s`` bounds every collective,
    so a peer that stops answering ends the run with an error instead of a hang."""
    if not world.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    init_method = f"tcp://{world.master[0]}:{world.master[1]}" if world.master else "env://"
    try:
        dist.init_process_group(backend, init_method=init_method, rank=world.rank, world_size=world.size,
                                timeout=datetime.timedelta(seconds=timeout_s), device_id=device if device.type == "cuda" else None)
    except (RuntimeError, ValueError) as e:
        raise TrainError(f"rank {world.rank}: cannot join the other {world.size - 1} processes: {first_line(e)}") from None


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean(world: World, value: torch.Tensor) -> float:
    """The mean of a scalar over the ranks (NaN if any rank's is: every rank sees the same)."""
    if not world.distributed:
        return float(value)
    t = value.detach().float().reshape(1).clone()
    dist.all_reduce(t)
    return float(t) / world.size


def on_main(world: World, fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only.  If it fails, every rank raises (the others would otherwise
    wait in their next collective until the timeout): rank 0 its own exception, the others a
    copy of its diagnostics (plain values: any exception class crosses the wire)."""
    failure: list[Any] = [None]
    result = None
    if world.main:
        try:
            result = fn()
        except GraphcError as e:
            failure[0] = ([(d.pos.file, d.pos.line, d.pos.col, d.message) for d in e.diagnostics], e.exit_code)
            own: BaseException = e
        except Exception as e:
            failure[0] = ([(NO_FILE, 1, 1, f"rank 0 failed: {type(e).__name__}: {first_line(e)}")], 1)
            own = e
    if world.distributed:
        dist.broadcast_object_list(failure, src=0)
    if failure[0] is None:
        return result
    if world.main:
        raise own
    diagnostics, code = failure[0]
    err = GraphcError(diagnostics[0][3], Pos(*diagnostics[0][:3]))
    err.diagnostics, err.exit_code = [Diagnostic(Pos(f, line, col), m) for f, line, col, m in diagnostics], code
    raise err


# --- strategies ---------------------------------------------------------------------------------


def _blocks(gm: fx.GraphModule) -> list[nn.Module]:
    """Every block instance (outermost first); FSDP shards each one on its own."""
    from graphc.lower.fx_lower import BlockModule

    return [m for m in gm.modules() if isinstance(m, BlockModule)]


class Strategy:
    """One process: the model runs as it is."""

    name = "none"

    def __init__(self, world: World, device: torch.device, partial_loss: bool = False) -> None:
        self.world, self.device = world, device
        self.partial_loss = partial_loss  # some spec output is in no loss term: its parameters get no gradient

    def wrap(self, gm: fx.GraphModule, forward: nn.Module, precision: str) -> nn.Module:
        """The module training calls (after any compile); ``gm`` keeps the spec's names."""
        return forward

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        """Around a micro-batch's backward: gradients sync across ranks only on the last one."""
        yield

    def full_state(self, gm: nn.Module) -> dict[str, torch.Tensor]:
        """The whole state dict under the spec's names (collective; complete on rank 0)."""
        return gm.state_dict()

    def load_full(self, gm: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Load a whole state dict (every rank passes the same one)."""
        gm.load_state_dict(state, strict=True)


class DDP(Strategy):
    """DistributedDataParallel: whole model per rank, gradients all-reduced in backward."""

    name = "ddp"

    def wrap(self, gm: fx.GraphModule, forward: nn.Module, precision: str) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # DDP must be told when parameters can go without a gradient (it costs a graph walk per step)
        self.ddp = DistributedDataParallel(_Calls(forward, gm), device_ids=ids, find_unused_parameters=self.partial_loss)
        return self.ddp

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        with contextlib.nullcontext() if last else self.ddp.no_sync():
            yield


class _Calls(nn.Module):
    """Lets DDP hold ``gm`` (its parameters) while calling ``forward`` (``gm`` or its compiled form)."""

    def __init__(self, forward: nn.Module, gm: nn.Module) -> None:
        super().__init__()
        self.gm = gm
        self._forward = [forward]  # a list: not registered twice as a submodule

    def forward(self, *args: Any) -> Any:
        return self._forward[0](*args)


class FSDP(Strategy):
    """FSDP2: ``fully_shard`` on every block instance, then on the root (which keeps the rest:
    embeddings, heads, tied tables); ``precision`` becomes its mixed-precision policy."""

    name = "fsdp"

    def wrap(self, gm: fx.GraphModule, forward: nn.Module, precision: str) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.device.type, (self.world.size,))
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype else MixedPrecisionPolicy()
        for block in reversed(_blocks(gm)):  # innermost first: a nested block is its own unit
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(gm, mesh=mesh, mp_policy=mp)
        self.gm = gm
        return forward

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        self.gm.set_requires_gradient_sync(last)  # type: ignore[operator]
        yield

    def full_state(self, gm: nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state: dict[str, Any] = get_model_state_dict(gm, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state

    def load_full(self, gm: nn.Module, state: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(gm, dict[str, Any](state), options=StateDictOptions(full_state_dict=True))


def strategy(world: World, device: torch.device, name: str, partial_loss: bool = False) -> Strategy:
    """The recipe's ``distributed.strategy`` when the run has more than one process, else none."""
    if not world.distributed:
        return Strategy(world, device)
    return {"ddp": DDP, "fsdp": FSDP}[name](world, device, partial_loss)


def sharded(model: nn.Module) -> bool:
    """True when ``model``'s parameters are DTensors (FSDP2): their state must be gathered."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def local(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this rank holds (the tensor itself unless it is a DTensor)."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


__all__ = ["DDP", "FSDP", "Strategy", "World", "device_for", "init", "mean", "on_main",
           "sharded", "shutdown", "strategy", "world_from_env"]
