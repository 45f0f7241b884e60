"""The run folder's record of what was trained: config.yaml and spec.yaml.

``config.yaml`` is the recipe as validated (every default filled in, data paths made
absolute) plus the ``--set`` values given; it is itself a recipe file, so
``graphc train RUN/spec.yaml --config RUN/config.yaml`` trains the same run again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from graphc.spec.load import Spec
from graphc.train.recipe import LoadedRecipe

HEADER = "# written by graphc train: {what}\n"


def _plain(value: Any) -> Any:
    """Positioned YAML maps/lists -> plain dicts/lists that yaml.safe_dump accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def config_yaml(loaded: LoadedRecipe, spec: Spec, overrides: Sequence[str]) -> str:
    """The resolved recipe under ``train:``, with where it came from and the --set values."""
    recipe = loaded.recipe.model_dump(mode="json")
    base = Path(loaded.file).parent if not loaded.file.startswith("<") else Path.cwd()
    data = recipe["data"]
    images = data.get("images")
    if images is not None and not Path(images["root"]).is_absolute():
        images["root"] = str((base / images["root"]).resolve())
    if data.get("dataset") and Path(data["dataset"]).suffix and not Path(data["dataset"]).is_absolute() and (base / data["dataset"]).exists():
        data["dataset"] = str((base / data["dataset"]).resolve())
    doc = {"spec": str(spec.file), "recipe": loaded.file, "set": list(overrides), "train": recipe}
    return HEADER.format(what="the resolved recipe of this run and the --set values it ran with") + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)


def spec_yaml(spec: Spec) -> str:
    """The spec as this run trained it (its --set values applied)."""
    return HEADER.format(what=f"the spec this run trained (from {spec.file})") + yaml.safe_dump(_plain(spec.raw), sort_keys=False)
