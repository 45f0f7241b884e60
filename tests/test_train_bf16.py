"""precision: bf16 + compile, the fast path on CPU: it trains, its loss tracks fp32, the
optimizer is torch's fused kernel, and a CPU without bf16 instructions gets a note.

Speed itself is measured by tools/bench train (docs/benchmarks.md), never asserted here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ROOT

import graphc
from graphc.train.loop import bf16_note, train
from graphc.train.optim import decay_groups, make_optimizer
from graphc.train.recipe import OptimizerCfg

TINY = ["layers=2", "d=32", "heads=2", "ctx=16", "train.data.max_chars=40000", "train.steps=40", "train.eval_every=20",
        "train.eval_batches=2", "train.batch_size=16"]


def test_bf16_compiled_training_tracks_fp32_eager(tmp_path: Path) -> None:
    """GPT-mini on the char corpus: bf16 + regional compile (the one torch.compile of this file)
    against fp32 eager, same seed and batches: the loss falls in both and the two curves stay
    within 2% of each other (the benchmark's 300-step criterion, on a tiny model)."""
    runs = {}
    for precision, compile in (("fp32", "none"), ("bf16", "auto")):
        runs[precision] = train(ROOT / "specs" / "gpt_mini.yaml", tmp_path / precision, ROOT / "specs" / "train" / "char_gpt.yaml",
                                [*TINY, f"train.precision={precision}", f"train.compile={compile}"], quiet=True)
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert (fp32.compile, bf16.compile) == ("none", "regional")
    assert [h["step"] for h in bf16.history] == [20, 40]
    assert bf16.history[-1]["val_loss"] < bf16.history[0]["val_loss"] < 5.0  # learning: log(256) = 5.55 at start
    for a, b in zip(fp32.history, bf16.history, strict=True):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=0.02)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.02)
        assert b["val_loss"] != a["val_loss"]  # bf16 really ran: not bit-identical to fp32


def _model() -> tuple[torch.fx.GraphModule, object]:
    tg = graphc.check(str(ROOT / "specs" / "gpt_mini.yaml"), ["layers=1", "d=16", "heads=2", "ctx=8"])
    return graphc.build(tg, seed=0), tg


@pytest.mark.parametrize(("kind", "fused"), [("adamw", True), ("adam", True), ("sgd", None)])
def test_adam_and_adamw_take_the_fused_kernel_on_cpu(kind: str, fused: bool | None) -> None:
    gm, tg = _model()
    opt = make_optimizer(gm, tg, OptimizerCfg(type=kind))  # type: ignore[arg-type]
    assert opt.defaults.get("fused") is fused


def test_fused_and_for_loop_adamw_agree_and_share_checkpoints() -> None:
    """The fused step is the same update rule: a few steps match torch's for-loop AdamW, and
    either one's state_dict (a checkpoint written before graphc fused it) loads into the other."""
    gm_f, tg = _model()
    gm_l, _ = _model()
    cfg = OptimizerCfg(type="adamw", lr=1e-2, weight_decay=0.1)
    fused = make_optimizer(gm_f, tg, cfg)  # type: ignore[arg-type]
    loop = torch.optim.AdamW(decay_groups(gm_l, tg, 0.1), lr=1e-2, foreach=False)  # type: ignore[arg-type]
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    x = torch.randint(0, 256, (4, 8))
    for _ in range(3):
        for gm, opt in ((gm_f, fused), (gm_l, loop)):
            opt.zero_grad()
            gm(x).float().square().mean().backward()
            opt.step()
    for (name, a), b in zip(gm_f.named_parameters(), gm_l.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    fused.load_state_dict(loop.state_dict())
    assert fused.state_dict()["state"][0]["exp_avg"].equal(loop.state_dict()["state"][0]["exp_avg"])


def test_bf16_note_only_for_bf16_on_a_cpu_without_bf16_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert bf16_note(cpu, "fp32") is None
    assert bf16_note(torch.device("cuda"), "bf16") is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert bf16_note(cpu, "bf16") is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    note = bf16_note(cpu, "bf16")
    assert note is not None and "no bf16 instructions" in note and "slower than fp32" in note
