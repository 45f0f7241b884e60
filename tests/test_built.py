"""What lowering hands on: one typed record (``Built``), nothing stuck on the torch module."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import onnx
import torch

import graphc
from graphc.export.onnx_export import export_model

SPEC = """
graphc: 1
name: names
inputs:
  x: {shape: [B, 4], example: {B: 2}}
nodes:
  graphc: {op: linear, in: x, out: 3}
  graphc_records: {op: relu, in: graphc}
outputs: {y: graphc_records}
"""


def test_lower_spec_returns_module_graph_and_records() -> None:
    built = graphc.lower_spec("specs/mlp.yaml", seed=0)
    assert isinstance(built.module, torch.fx.GraphModule)
    assert built.graph.flat.spec.name == "mlp" and built.weights is None
    assert set(built.records) == {"fc1", "fc2"}  # the layers with parameters, for model.py
    assert built.records["fc1"].ctor is torch.nn.Linear
    assert not hasattr(built.module, "graphc") and not hasattr(built.module, "graphc_records")
    y = built.module(*graphc.example_inputs(built.graph, B=3))
    assert y.shape[0] == 3


def test_build_still_returns_the_module_for_users() -> None:
    gm = graphc.build("specs/mlp.yaml", seed=0)
    assert isinstance(gm, torch.fx.GraphModule) and "fc1" in gm.code


def test_nodes_may_be_named_graphc_and_graphc_records(tmp_path: Path) -> None:
    """Once reserved only because graphc stored its own data under those module attributes."""
    r = graphc.export_onnx(SPEC, tmp_path / "m.onnx")
    assert r.verify.passed
    values = json.loads(next(p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props if p.key == "graphc.values"))
    assert {"graphc", "graphc_records"} <= set(values)


def test_export_restores_warning_filters_and_log_levels(tmp_path: Path) -> None:
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.onnx._internal.exporter._registration")]
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        for lg in loggers:
            lg.setLevel(logging.INFO)
        before = list(warnings.filters)
        export_model(graphc.lower_spec("specs/mlp.yaml", seed=0), tmp_path / "m.onnx")
        assert warnings.filters == before
        assert [lg.level for lg in loggers] == [logging.INFO, logging.INFO]
    for lg in loggers:
        lg.setLevel(logging.NOTSET)
