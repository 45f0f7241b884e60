"""``graphc summary --train``: the memory planner's estimate against measured peak memory on CPU.

Each case builds ``graphc train``'s own Trainer (eager), runs one warm-up step (the
optimizer state now exists), then measures ``Trainer.train_step`` twice
(tests/memory_probe.py):

* profiler: torch's profiler with ``profile_memory=True`` (every CPU allocation and free),
  on top of what is resident when the step starts (parameters, buffers, optimizer state);
* tensors: a TorchDispatchMode adding up live tensor storages after every op.

The estimate is :func:`graphc.graph.memory_planner.plan_memory` with ``device="cpu"`` (the
CPU optimizer's per-parameter loop).  ``+ckpt`` rows wrap every top-level block instance in
``torch.utils.checkpoint`` (non-reentrant) and plan with ``checkpoint=True``.  Goal (#16): within 20% of the measured peak.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from memory_probe import measure, random_images

from graphc.graph.memory_planner import TrainSetup, plan_memory
from graphc.summarize import human

ROOT = Path(__file__).resolve().parent.parent.parent
RESNET = {"classes": "10", "inputs.image.example.H": "64", "inputs.image.example.W": "64"}
CHAR = {"data.max_chars": "50000"}
MOBILENET = RESNET
IMAGES = random_images((3, 64, 64))
_rng = np.random.default_rng(0)
TOKENS = {"tokens": _rng.integers(0, 256, (512, 32)).astype(np.int64), "label": _rng.integers(0, 4, 512).astype(np.int64)}
CASES: list[tuple[str, str, dict[str, str], str | None, dict[str, str], dict[str, np.ndarray] | None, int, str]] = [
    # (name, spec, spec --set, recipe, recipe --set, arrays to train on, batch, precision; "+ckpt": every block checkpointed)
    ("digits_cnn", "specs/digits_cnn.yaml", {}, None, {}, None, 32, "fp32"),
    ("digits_cnn", "specs/digits_cnn.yaml", {}, None, {}, None, 256, "fp32"),
    ("digits_cnn", "specs/digits_cnn.yaml", {}, None, {}, None, 256, "bf16"),
    ("GPT-mini 4 x 128, T 64", "specs/gpt_mini.yaml", {}, "specs/train/char_gpt.yaml", CHAR, None, 8, "fp32"),
    ("GPT-mini 4 x 128, T 64", "specs/gpt_mini.yaml", {}, "specs/train/char_gpt.yaml", CHAR, None, 32, "fp32"),
    ("GPT-mini 4 x 128, T 64", "specs/gpt_mini.yaml", {}, "specs/train/char_gpt.yaml", CHAR, None, 32, "bf16"),
    ("resnet18 64x64, 10 classes", "specs/resnet18.yaml", RESNET, None, {}, IMAGES, 8, "fp32"),
    ("resnet18 64x64, 10 classes", "specs/resnet18.yaml", RESNET, None, {}, IMAGES, 32, "fp32"),
    ("resnet18 64x64, 10 classes", "specs/resnet18.yaml", RESNET, None, {}, IMAGES, 32, "bf16"),
    ("GPT-mini 4 x 128, T 64", "specs/gpt_mini.yaml", {}, "specs/train/char_gpt.yaml", CHAR, None, 32, "fp32+ckpt"),
    ("resnet18 64x64, 10 classes", "specs/resnet18.yaml", RESNET, None, {}, IMAGES, 32, "fp32+ckpt"),
    ("mobilenet_v2 64x64, 10 classes", "specs/mobilenet_v2.yaml", MOBILENET, None, {}, IMAGES, 32, "fp32"),
    ("lstm_classifier (2-layer biLSTM, T 32)", "specs/lstm_classifier.yaml", {}, None, {}, TOKENS, 128, "fp32"),
]


def run() -> list[tuple[str, str, str]]:
    rows = []
    for name, spec, spec_set, config, recipe_set, arrays, batch, label in CASES:
        precision, ckpt = label.removesuffix("+ckpt"), label.endswith("+ckpt")
        tg, m = measure(str(ROOT / spec), spec_set, str(ROOT / config) if config else None,
                        {"batch_size": str(batch), "precision": precision, **recipe_set}, arrays=arrays, checkpoint=ckpt)
        plan = plan_memory(tg, TrainSetup(batch=batch, precision=precision, device="cpu", checkpoint=ckpt))
        ratio = plan.peak / m.profiler
        rows.append((f"{name}, batch {batch}, {label}: estimate / measured",
                     f"{human(plan.peak, 'B')} / {human(m.profiler, 'B')} = {ratio:.3f}",
                     f"tensors {human(m.tensors, 'B')}; peak at {plan.phase}; {'ok' if abs(ratio - 1) <= 0.2 else 'MISSED'} (within 20%)"))
    return rows
