"""Weight files, the torch side: safetensors keyed by the spec's node paths (= ``gm.state_dict()`` keys).

Read, write and load whole state dicts, digest them, and refuse non-finite values; used by
export, training, LoRA and the API.  The rest of :mod:`graphc.weights` (maps, plan, header
readers) stays torch-free.

Tied weights: safetensors refuses tensors that share storage, so a tied parameter is stored
once, under the key of its *owner* (the first name ``named_parameters`` gives it, i.e. the
module that owns the table, e.g. ``tok.weight`` for ``head: {tie: tok}``).  The other names
of the same tensor are listed in the file's metadata (``graphc.ties``: alias -> owner) and
are re-tied on load simply because the model already shares the parameter: loading the owner
fills both.  A file that also carries the alias key (e.g. written by ``torch.save``) is
accepted as long as both copies agree in shape.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from graphc.errors import Pos, WeightsError, first_line
from graphc.io import atomic_path
from graphc.weights.readers import looks_safetensors

if TYPE_CHECKING:
    from graphc.graph.infer import TypedGraph

TIES_KEY = "graphc.ties"
FRESH = "fresh weights from the spec's init"  # the weights source of a model no file was loaded into


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """``{alias key: owner key}`` for every state_dict entry that shares another's tensor."""
    owners: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if not isinstance(t, torch.Tensor) or t.numel() == 0:
            continue
        key = id(t)
        if key in owners:
            aliases[name] = owners[key]
        else:
            owners[key] = name
    return aliases


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None,
                 state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model``'s state_dict (or ``state``, e.g. gathered from shards) as safetensors,
    atomically; tied tensors stored once.

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    aliases = tied_aliases(model)
    tensors = {k: v.detach().contiguous().cpu() for k, v in (model.state_dict() if state is None else state).items() if k not in aliases}
    meta = {TIES_KEY: json.dumps(aliases), **(metadata or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or torch file; a clear one-line error if it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if looks_safetensors(path):
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as e:  # corrupt or truncated: any reader error means the same to the user
        raise WeightsError(f"{path}: cannot read weights: {first_line(e)}") from e
    return _tensor_dict(path, obj)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` in place after checking every key and shape.

    Raises:
        WeightsError: naming the missing, unexpected and mis-shaped keys (all at once).
    """
    tensors = read_weights(path)
    aliases = tied_aliases(model)
    expected = model.state_dict()
    problems = _mismatches(expected, tensors, aliases)
    if problems:
        raise WeightsError(f"{path}: weights do not match the model: {'; '.join(problems)}")
    bad = non_finite(tensors)
    if bad:
        raise WeightsError(f"{path}: weights hold non-finite values (NaN or inf): {_listed(bad)}")
    state = {k: tensors[k] if k in tensors else tensors[aliases[k]] for k in expected}
    model.load_state_dict(state, strict=True)
    return model


def weights_digest(model: nn.Module) -> str:
    """sha256 over the model's state (names, dtypes, shapes and bytes; tied tensors once).

    Recorded in the exported ONNX file so ``verify`` can tell "different weights" from
    "ONNX disagrees with torch" (the first is exit 1 with a hint, the second exit 3).
    """
    h = hashlib.sha256()
    aliases = tied_aliases(model)
    for name, t in sorted(model.state_dict().items()):
        if name in aliases:
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the bytes in place, no copy
    return h.hexdigest()


def weights_source(loaded: str | None) -> str:
    """The weights file a model was loaded from (``Built.weights``), or :data:`FRESH`."""
    return loaded or FRESH


NAMED = 8  # at most this many tensors are named in one error line


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """``name (N NaN, M inf of K)`` for every floating tensor with a NaN or infinity.

    Checked before export or verification: a NaN weight makes both engines produce NaN or
    garbage, and verification then fails (exit 3) with numbers that say nothing useful.
    """
    out = []
    for name, t in tensors.items():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        nan = int(torch.isnan(t).sum())
        inf = int(torch.isinf(t).sum())
        if nan or inf:
            what = ", ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "inf")) if n)
            out.append(f"{name} ({what} of {t.numel()})")
    return out


def check_initialized(model: nn.Module, tg: TypedGraph | None = None) -> None:
    """Refuse a model whose parameters or buffers are not finite (after load or init).

    Loaded files are already checked by :func:`load_weights` (naming the file); what is
    left is initialization, e.g. ``init: {std: 1e300}`` overflowing float32, so the error
    points at the first affected node's ``init`` in the spec (``tg``: what ``model`` was built from).
    """
    bad = non_finite({k: v.detach() for k, v in model.state_dict().items()})
    if not bad:
        return
    node = bad[0].split(" ", 1)[0].rpartition(".")[0]
    pos: Pos | None = None
    if tg is not None:
        flat = tg.flat.nodes.get(node)
        own = flat is not None and flat.init is not None
        pos = flat.pos if flat is not None and (own or tg.flat.spec.doc.init is None) else tg.flat.spec.pos("init")
    raise WeightsError(f"weights are not finite after initialization (check the 'init' std/scale): {_listed(bad)}", pos)


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - NAMED} more" if len(items) > NAMED else ""
    return ", ".join(items[:NAMED]) + more


def _mismatches(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], aliases: dict[str, str]) -> list[str]:
    missing = [k for k in expected if k not in got and not (k in aliases and aliases[k] in got)]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {list(got[k].shape)} (model has {list(v.shape)})"
        for k, v in expected.items()
        if k in got and tuple(got[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected))
    if shapes:
        problems.append("wrong shape " + ", ".join(shapes))
    return problems


def _tensor_dict(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state_dict (expected a mapping of names to tensors)")
    return {str(k): v for k, v in obj.items()}

