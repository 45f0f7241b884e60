"""Issue-3 benchmarks: graphc-built models vs hand-written twins, and build time vs size.

* train-step time of each graphc-built model / its hand-written PyTorch twin (goal <= 1.03):
  same optimizer, same batch, eager mode, measured in interleaved rounds so machine noise
  hits both alike; the figure is the median of per-round ratios.
* spec-to-module build time (``graphc.build`` on a checked graph) at 1k and 10k nodes, and
  the per-node time at 10k over 1k (goal <= 1.3: building is linear in the node count).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import graphc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

import gen_spec  # noqa: E402
import twins_gpt  # noqa: E402
import twins_vision  # noqa: E402

Row = tuple[str, str, str]


class _SdpaAttention(twins_gpt.CausalSelfAttention):
    """nanoGPT's attention as nanoGPT writes it on torch 2: the fused SDPA kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


def _gpt_twin() -> nn.Module:
    cfg = twins_gpt.GPTConfig()
    model = twins_gpt.GPT(cfg)
    for block in model.h:
        attn = _SdpaAttention(cfg)
        attn.load_state_dict(block.attn.state_dict())
        block.attn = attn
    return model


def _step_fn(model: nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        out = model(*inputs)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _ratio(a: Callable[[], None], b: Callable[[], None], rounds: int = 15, steps: int = 10) -> tuple[float, float, float]:
    """Median over rounds of time(a)/time(b), plus the median step times."""
    for _ in range(3):
        a(), b()
    ta, tb, ratios = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            a()
        t1 = time.perf_counter()
        for _ in range(steps):
            b()
        t2 = time.perf_counter()
        ta.append((t1 - t0) / steps)
        tb.append((t2 - t1) / steps)
        ratios.append(ta[-1] / tb[-1])
    return statistics.median(ratios), statistics.median(ta), statistics.median(tb)


def _pair(spec: str, twin: nn.Module, batch: int, **dims: int) -> tuple[Callable[[], None], Callable[[], None]]:
    tg = graphc.check(ROOT / "specs" / spec)
    gm = graphc.build(tg, seed=0)
    inputs = graphc.example_inputs(tg, B=batch, **dims)
    with torch.no_grad():
        out = gm(*inputs)
    classes = out.shape[-1]
    target = torch.randint(0, classes, out.shape[:-1])
    twin.load_state_dict(_twin_state(gm, twin), strict=True)
    return _step_fn(gm, inputs, target), _step_fn(twin, inputs, target)


def _twin_state(gm: nn.Module, twin: nn.Module) -> dict[str, torch.Tensor]:
    if isinstance(twin, twins_gpt.GPT):
        state = {t: gm.state_dict()[g] for t, g in twins_gpt.weight_map(twins_gpt.GPTConfig()).items()}
        state["lm_head.weight"] = state["wte.weight"]
        return state
    return dict(gm.state_dict())


def train_step_rows() -> list[Row]:
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cases = [
        ("mlp (10->5->3), batch 256", "mlp.yaml", twins_vision.MLP(), 256, {}),
        ("cifar_simplecnn, batch 32", "cifar_simplecnn.yaml", twins_vision.SimpleCNN(), 32, {}),
        ("gpt_mini (4 layers, d 128), batch 8 x 64", "gpt_mini.yaml", _gpt_twin(), 8, {"T": 64}),
    ]
    rows: list[Row] = []
    for label, spec, twin, batch, dims in cases:
        a, b = _pair(spec, twin, batch, **dims)
        ratio, ta, tb = _ratio(a, b)
        rows.append((f"train step graphc/twin: {label}", f"{ratio:.3f}", f"goal <= 1.03 ({ta * 1e3:.2f} ms vs {tb * 1e3:.2f} ms)"))
    return rows


def build_rows() -> list[Row]:
    per_node = {}
    rows: list[Row] = []
    graphc.build(graphc.check(gen_spec.generate(200)))  # warm imports and caches
    for n in (1000, 10000):
        tg = graphc.check(gen_spec.generate(n))
        nodes = len(tg.flat.op_nodes())
        times = []
        for _ in range(3 if n == 1000 else 1):
            t0 = time.perf_counter()
            graphc.build(tg)
            times.append(time.perf_counter() - t0)
        best = min(times)
        per_node[n] = best / nodes
        rows.append((f"build time, {nodes} op nodes", f"{best:.2f} s", f"{per_node[n] * 1e3:.3f} ms/node"))
    rows.append(("build per-node time 10k / 1k", f"{per_node[10000] / per_node[1000]:.2f}", "goal <= 1.3"))
    return rows


def run() -> list[Row]:
    return train_step_rows() + build_rows()
