"""The memory planner (graphc/graph/memory_planner.py): estimates against measured peaks,
the rules of its parts, ``graphc summary --train`` and ``graphc train``'s refusal on CUDA.

The measured side is tests/memory_probe.py: ``Trainer.train_step`` itself, under torch's
profiler (allocator records).  The comparisons are of bytes, never of time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from hostile import assert_clean, run_guarded

import graphc
from graphc.graph.memory_planner import TrainSetup, plan_memory, ways_to_fit

GPT = str(ROOT / "specs/gpt_mini.yaml")
DIGITS = str(ROOT / "specs/digits_cnn.yaml")
RESNET = str(ROOT / "specs/resnet18.yaml")
CHAR = str(ROOT / "specs/train/char_gpt.yaml")
SMALL_RESNET = {"width": "8", "classes": "10", "inputs.image.example.H": "32", "inputs.image.example.W": "32"}

# (id, spec, spec --set, recipe file, recipe --set, batch, image [C, H, W] for a fixed-size image set, checkpoint blocks)
MEASURED = [
    ("digits_cnn", DIGITS, {}, None, {}, 32, None, False),
    ("gpt_mini", GPT, {"layers": "2"}, CHAR, {"data.max_chars": "20000"}, 8, None, False),
    ("gpt_mini-checkpointed", GPT, {"layers": "2"}, CHAR, {"data.max_chars": "20000"}, 8, None, True),
    ("resnet18", RESNET, SMALL_RESNET, None, {}, 4, (3, 32, 32), False),
]


@pytest.mark.parametrize(("spec", "spec_set", "config", "recipe_set", "batch", "image", "ckpt"), [m[1:] for m in MEASURED],
                         ids=[m[0] for m in MEASURED])
def test_estimate_is_within_20_percent_of_the_measured_peak(spec: str, spec_set: dict[str, str], config: str | None, recipe_set: dict[str, str],
                                                            batch: int, image: tuple[int, ...] | None, ckpt: bool) -> None:
    from memory_probe import measure, random_images

    arrays = random_images(image) if image else None
    tg, measured = measure(spec, spec_set, config, {"batch_size": str(batch), **recipe_set}, steps=1, arrays=arrays, checkpoint=ckpt)
    plan = plan_memory(tg, TrainSetup(batch=batch, device="cpu", checkpoint=ckpt))
    assert abs(plan.peak - measured.profiler) <= 0.2 * measured.profiler, (plan.peak, measured, plan.phase, plan.at_peak)
    assert abs(measured.tensors - measured.profiler) <= 0.1 * measured.profiler  # the two measurements agree


def _gpt(**over: str) -> graphc.TypedGraph:
    return graphc.check(GPT, [f"{k}={v}" for k, v in over.items()])


def test_parts_add_up_to_the_peak_and_follow_the_optimizer() -> None:
    tg = _gpt()
    adamw = plan_memory(tg, TrainSetup(batch=4))
    assert sum(adamw.at_peak.values()) == adamw.peak
    assert adamw.sizes["optimizer_state"] == 2 * adamw.sizes["gradients"]  # two fp32 moments per trainable parameter
    assert plan_memory(tg, TrainSetup(batch=4, optimizer="sgd")).sizes["optimizer_state"] == adamw.sizes["gradients"]
    assert plan_memory(tg, TrainSetup(batch=4, optimizer="sgd", momentum=0.0)).sizes["optimizer_state"] == 0
    params = graphc.summary(tg).total_params
    assert adamw.sizes["gradients"] == 4 * params  # every parameter trains, the tied head weight counts once


def test_activations_grow_with_the_batch_and_shrink_with_bf16_and_checkpointing() -> None:
    tg = _gpt()
    act = {b: plan_memory(tg, TrainSetup(batch=b)).sizes["activations"] for b in (4, 8)}
    assert act[8] == 2 * act[4]  # every kept tensor has the batch dim
    bf16 = plan_memory(tg, TrainSetup(batch=8, precision="bf16")).sizes["activations"]
    ckpt = plan_memory(tg, TrainSetup(batch=8, checkpoint=True)).sizes["activations"]
    assert bf16 < act[8] and ckpt < act[8]
    one = plan_memory(tg, TrainSetup(batch=8, checkpoint=("body",))).sizes["activations"]
    assert one == ckpt  # naming the block call checkpoints every instance of it, like True here


def test_a_kept_tensor_shared_by_two_ops_or_seen_through_a_view_counts_once(tmp_path: Path) -> None:
    """relu keeps its output; flatten is a view of it; linear keeps its (flattened) input: one tensor."""
    spec = tmp_path / "s.yaml"
    spec.write_text("graphc: 1\nname: s\ninputs:\n  x: {shape: [B, 4, 6], example: {B: 3}}\n"
                    "nodes:\n  fc0: {op: linear, in: x, out: 5}\n  act: {op: relu}\n  flat: {op: flatten}\n"
                    "  drop: {op: dropout, p: 0.0}\n  fc: {op: linear, out: 2}\noutputs: {y: fc}\n")
    tg = graphc.check(str(spec))
    plan = plan_memory(tg, TrainSetup(batch=3))
    relu_out = 3 * 4 * 5 * 4
    loss = 3 * 2 * 4  # the log-probabilities of the output
    assert plan.sizes["activations"] == relu_out + loss  # fc0 keeps x, but x is the batch (counted there)


def test_fsdp_divides_the_states_and_adds_the_gathered_unit() -> None:
    tg = _gpt(layers="4")
    one = plan_memory(tg, TrainSetup(batch=4))
    four = plan_memory(tg, TrainSetup(batch=4, strategy="fsdp", world=4))
    for part in ("parameters", "gradients", "optimizer_state"):
        assert four.sizes[part] == one.sizes[part] // 4
    assert four.peak < one.peak
    ddp = plan_memory(tg, TrainSetup(batch=4, strategy="ddp", world=4))
    assert ddp.sizes["gradients"] == 2 * one.sizes["gradients"]  # DDP's buckets are a second copy


def test_ways_to_fit_are_ordered_and_do_fit() -> None:
    """GPT-mini at batch 64 is bound by activations: a smaller batch first, then checkpointing
    (sharding the states cannot fit it); the digits CNN at batch 1 by its states: FSDP."""
    tg = _gpt()
    setup = TrainSetup(batch=64)
    limit = int(plan_memory(tg, setup).peak * 0.8)
    ways = ways_to_fit(tg, setup, limit)
    assert ways[0].startswith("batch_size 32 with grad_accum 2") and ways[1].startswith("activation checkpointing")
    assert plan_memory(tg, TrainSetup(batch=32)).peak <= limit
    assert plan_memory(tg, TrainSetup(batch=64, checkpoint=True)).peak <= limit
    assert not any(w.startswith("fsdp") for w in ways)
    digits = graphc.check(DIGITS)
    setup = TrainSetup(batch=1)
    limit = int(plan_memory(digits, setup).peak * 0.8)
    ways = ways_to_fit(digits, setup, limit)
    world = int(ways[0].split()[2])
    assert ways[0].startswith("fsdp on") and plan_memory(digits, TrainSetup(batch=1, strategy="fsdp", world=world)).peak <= limit


def test_planner_and_summary_import_no_torch() -> None:
    code = ("import sys, graphc.graph.memory_planner, graphc.summarize, graphc.cli; "
            "from graphc.cli import main; main(['summary', sys.argv[1], '--train', '--json']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code, GPT], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["train_memory"]["peak"] > 0


def test_summary_train_json_and_table() -> None:
    r = run_cli("summary", DIGITS, "--train", "--json")
    assert r.code == 0, r.err
    mem = json.loads(r.out)["train_memory"]
    assert mem["setup"]["batch"] == 32 and mem["setup"]["optimizer"] == "adamw"  # from the spec's train: section
    assert mem["peak"] == sum(mem["at_peak"].values())
    r = run_cli("summary", GPT, "--batch", "8", "--precision", "bf16", "--strategy", "fsdp", "--world", "4", "--checkpoint-activations")
    assert r.code == 0, r.err
    assert "training memory per process" in r.out and "setup: batch 8, bf16, adamw, fsdp x 4, checkpointing" in r.out
    assert "saved activations" in r.out and "peak at:" in r.out


@pytest.mark.parametrize(("args", "code", "message"), [
    (("--world", "3"), 1, "--world needs --strategy"),
    (("--batch", "0"), 2, "expected a positive integer"),
    (("--precision", "int8"), 2, "invalid choice"),
])
def test_summary_train_bad_options(args: tuple[str, ...], code: int, message: str) -> None:
    r = run_guarded("summary", GPT, *args)
    assert_clean(r, codes=(code,), positioned=code == 1, contains=message)


def test_summary_train_huge_batch_is_bounded() -> None:
    r = run_guarded("summary", GPT, "--train", "--batch", "1000000000000", "--json")
    assert r.code == 0 and r.seconds < 5, r.err
    assert json.loads(r.out)["train_memory"]["peak"] > 10**15


def test_train_on_cuda_refuses_a_run_that_does_not_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import graphc.train.loop as loop
    import graphc.train.memory as memory

    monkeypatch.setattr(loop, "pick_device", lambda name: torch.device("cuda"))
    free = plan_memory(graphc.check(DIGITS), TrainSetup(batch=64)).peak  # batch 64 fits, 128 does not
    monkeypatch.setattr(memory, "device_memory", lambda device: (free, 2 * free))
    run = tmp_path / "run"
    r = run_cli("train", DIGITS, "-o", str(run), "--set", "train.batch_size=256")
    assert r.code == 1, r.err
    assert "free on cuda; cheapest way to fit: batch_size 64 with grad_accum 4" in r.err
    assert "training memory per process (batch 256" in r.err and "Traceback" not in r.err
    assert not run.exists()  # refused before anything was written or allocated


def test_train_memory_check_passes_when_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import graphc.train.memory as memory
    from graphc.train.recipe import load_recipe

    monkeypatch.setattr(memory, "device_memory", lambda device: (10**12, 10**12))
    tg = graphc.check(DIGITS)
    memory.check_memory(tg, load_recipe(tg.flat.spec).recipe, torch.device("cuda"))  # no error


def test_checkpoint_names_read_like_the_trainers_patterns(tmp_path: Path) -> None:
    """``body``, ``body.*`` and the block's name select the same instances as ``True``; a
    call's own ``checkpoint: true`` in the spec is planned without any recipe name."""
    tg = _gpt()
    every = plan_memory(tg, TrainSetup(batch=32, checkpoint=True)).peak
    assert plan_memory(tg, TrainSetup(batch=32)).peak > every
    for names in (("body",), ("body.*",), ("decoder",)):
        assert plan_memory(tg, TrainSetup(batch=32, checkpoint=names)).peak == every, names
    marked = tmp_path / "gpt.yaml"
    marked.write_text(Path(GPT).read_text().replace("body: {block: decoder,", "body: {block: decoder, checkpoint: true,"))
    assert plan_memory(graphc.check(str(marked)), TrainSetup(batch=32)).peak == every
