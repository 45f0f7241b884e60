"""``model.py``: the built model as standalone PyTorch source that imports only torch.

It holds graphc/lower/runtime.py's source (helpers lowered graphs call), one class per
generated block class (shared by all its instances, written once), the top model class, and
a ``build()`` that replays every recorded constructor call at its node path, re-ties tied
weights and freezes frozen nodes, so ``state_dict`` keys are the spec's node paths.
``load(path)`` reads ``weights.safetensors`` with a small torch-only reader.
"""

from __future__ import annotations

import builtins
import inspect
import keyword
import math
import re
import types
from typing import Any

import torch
from torch import fx, nn

from graphc.errors import ExportError
from graphc.graph.infer import TypedGraph
from graphc.lower import runtime
from graphc.lower.fx_lower import BlockModule

RUNTIME_MODULE = runtime.__name__

LOADER = '''
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
              "U8": torch.uint8, "BOOL": torch.bool}


def load_safetensors(path):
    """The tensors of a safetensors file, read with torch alone."""
    import json
    import struct

    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = memoryview(data)[8 + n :]
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _ST_DTYPES[info["dtype"]]
        raw = bytes(body[start:end])
        t = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        out[key] = t.reshape(info["shape"])
    return out


def load(path="weights.safetensors"):
    """``build()`` with the weights at ``path`` (tied weights are stored once, under their owner)."""
    model = build()
    state = load_safetensors(path)
    for alias, owner in TIED.items():
        state.setdefault(alias, state[owner])
    model.load_state_dict(state, strict=True)
    return model.eval()
'''


def _global_line(name: str, obj: Any) -> str | None:
    """How model.py defines a name the fx code refers to (None: already defined)."""
    if name == "torch":
        return None
    if isinstance(obj, types.ModuleType):
        return f"import {obj.__name__} as {name}"
    if isinstance(obj, float):
        return f"{name} = float({str(obj)!r})"
    if obj is type(None):
        return f"{name} = type(None)"
    module = getattr(obj, "__module__", None) or ""
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "")
    if module == RUNTIME_MODULE:
        return None if qual == name else f"{name} = {qual}"
    if module.startswith("torch") or module == "builtins" or getattr(builtins, str(qual), None) is obj:
        ref = qual if module == "builtins" else f"{_torch_path(obj)}"
        return None if ref == name else f"{name} = {ref}"
    raise ExportError(f"model.py: generated code refers to '{name}' from module '{module}', which is not part of torch")


def _torch_path(obj: Any) -> str:
    """A dotted path under ``torch`` that evaluates to ``obj`` (``torch.nn.functional.gelu``)."""
    module: str = getattr(obj, "__module__", "") or ""
    name: str = getattr(obj, "__name__", "") or ""
    for candidate in (f"{module}.{name}", f"torch.{name}", f"torch.nn.functional.{name}"):
        if _resolve(candidate) is obj:
            return candidate
    raise ExportError(f"model.py: cannot name '{module}.{name}' through torch")


def _resolve(path: str) -> Any:
    import importlib

    parts = path.split(".")
    try:
        cur: Any = importlib.import_module(parts[0])
        for p in parts[1:]:
            cur = getattr(cur, p)
    except (ImportError, AttributeError):
        return None
    return cur


def _ctor_name(ctor: Any, node: str) -> str:
    module = getattr(ctor, "__module__", "")
    if module == RUNTIME_MODULE:
        return str(ctor.__qualname__)
    name = str(getattr(ctor, "__name__", ""))
    if name and getattr(nn, name, None) is ctor:
        return f"nn.{name}"  # how people write it (model.py has `from torch import nn`)
    if module.startswith("torch"):
        return _torch_path(ctor)
    raise ExportError(f"model.py: node '{node}' uses layer {module}.{ctor.__qualname__}, which is not part of torch or graphc's runtime")


def _literal(value: Any) -> str:
    """Source text for a constructor argument; refuses values whose repr is not code.

    Values are written with the builtin types' own ``repr`` (a subclass could override
    it), so spec text reaches model.py as a string literal and nothing else.
    """
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, str):
        return str.__repr__(value)  # the builtin repr: a subclass could override __repr__
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value) if math.isfinite(value) else f"float({float.__repr__(value)!r})"
    if isinstance(value, torch.dtype) and getattr(torch, str(value).removeprefix("torch."), None) is value:
        return str(value)
    if isinstance(value, torch.device):
        return f"torch.device({str(value)!r})"
    if type(value) in (tuple, list):
        inner = ", ".join(_literal(v) for v in value)
        return f"({inner},)" if type(value) is tuple else f"[{inner}]"
    if type(value) is dict:
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    raise ExportError(f"model.py: cannot write constructor argument {_comment_text(repr(value))[:60]}")


def _comment_text(text: str) -> str:
    """``text`` as one line that is safe inside a ``#`` comment or a docstring: newlines,
    control and line-separator characters (anything not printable), backslashes and quotes
    are written as escapes, so nothing in it can end the line or close the docstring."""
    return "".join(ch if ch.isprintable() and ch not in "\"'\\" else _ESCAPES.get(ch) or repr(ch)[1:-1] for ch in str(text))


_ESCAPES = {'"': "\\x22", "'": "\\x27", "\\": "\\\\"}


def _class_name(name: str, taken: set[str], fallback: str) -> str:
    """``name`` if it can be a Python class name that is not taken yet, else ``fallback``
    numbered until free (block and spec names are spec text: never pasted unchecked)."""
    if not name.isidentifier() or keyword.iskeyword(name) or name in taken or name in _RESERVED:
        base, i = fallback, 0
        name = base
        while name in taken or name in _RESERVED:
            i += 1
            name = f"{base}{i}"
    taken.add(name)
    return name


# names model.py defines itself (a class with one of these names would shadow them)
_RESERVED = {"torch", "nn", "fx", "build", "load", "load_safetensors", "TIED", "_ST_DTYPES", *vars(runtime), *vars(builtins)}


def _forward(graph: fx.Graph, globals_: dict[str, str | None]) -> str:
    code = graph.python_code(root_module="self")
    for name, obj in code.globals.items():  # fx lists names it might use; keep the used ones
        if re.search(rf"\b{re.escape(name)}\b", code.src):
            globals_.setdefault(name, _global_line(name, obj))
    body = code.src.strip("\n").rstrip()
    return "\n".join("    " + line if line else "" for line in body.splitlines())


def _runtime_source() -> str:
    src = inspect.getsource(runtime)
    lines = src.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(("import", "from")) and "__future__" not in ln)
    return "\n".join(lines[start:]).strip() + "\n"


def _modules_paths(gm: fx.GraphModule) -> list[str]:
    """Container paths (plain ``nn.Module`` holders such as ``body`` of ``body.0``)."""
    return [name for name, m in gm.named_modules() if name and type(m) is nn.Module]


def generate(gm: fx.GraphModule) -> str:
    """The source of model.py for ``gm`` (built by :func:`graphc.build`)."""
    tg: TypedGraph = gm.graphc  # type: ignore[assignment]
    records: dict[str, Any] = gm.graphc_records  # type: ignore[assignment]
    globals_: dict[str, str | None] = {}
    classes: dict[type, str] = {}
    class_src: list[str] = []
    block_paths: dict[str, str] = {}
    taken: set[str] = set()
    for path, mod in gm.named_modules():
        if isinstance(mod, BlockModule):
            cls = type(mod)
            if cls not in classes:
                name = _class_name(cls.__name__, taken, "Block")
                classes[cls] = name
                class_src.append(f"class {name}(nn.Module):\n{_forward(mod.graph, globals_)}\n")
            block_paths[path] = classes[cls]
    top = _class_name(type(gm).__name__, taken, "Model")
    class_src.append(f"class {top}(nn.Module):\n{_forward(gm.graph, globals_)}\n")
    build = [f"def build():\n    \"\"\"The model with freshly initialized weights.\"\"\"\n    model = {top}()"]
    made = {**{p: "nn.Module()" for p in _modules_paths(gm)}, **{p: f"{c}()" for p, c in block_paths.items()}}
    for node, rec in records.items():
        args = [_literal(a) for a in rec.args] + [f"{k}={_literal(v)}" for k, v in rec.kwargs.items()]
        made[node] = f"{_ctor_name(rec.ctor, node)}({', '.join(args)})"
    for path in sorted(made, key=lambda p: p.count(".")):
        parent, _, leaf = path.rpartition(".")
        owner = f"model.get_submodule({parent!r})" if parent else "model"
        build.append(f"    {owner}.add_module({leaf!r}, {made[path]})")
    for node, ties in tg.ties.items():
        for param, (target, target_param) in ties.items():
            build.append(f"    setattr(model.get_submodule({node!r}), {param!r}, getattr(model.get_submodule({target!r}), {target_param!r}))")
    for frozen in tg.flat.op_nodes():
        if frozen.freeze and frozen.name in made:
            build.append(f"    model.get_submodule({frozen.name!r}).requires_grad_(False)")
    build.append("    return model\n")
    from graphc.export.weights import tied_aliases

    spec = tg.flat.spec
    header = [  # spec text (name, path) only as escaped one-line text: it must never become code
        f'"""{_comment_text(spec.name)}: generated by graphc from {_comment_text(str(spec.file))} (sha256 {_comment_text(spec.sha256[:12])}).',
        "",
        "Standalone: imports only torch.  ``model = load('weights.safetensors')`` gives the trained model.",
        '"""',
        "",
    ]
    glob = sorted(line for line in globals_.values() if line)
    parts = [
        "\n".join(header),
        "# ---- graphc runtime helpers (graphc/lower/runtime.py) ----",
        _runtime_source(),
        "# ---- names the generated code refers to ----",
        "\n".join(glob) + "\n",
        "# ---- generated modules ----",
        "\n\n".join(class_src),
        "\n".join(build),
        f"TIED = {tied_aliases(gm)!r}  # alias -> owner: tied tensors are stored once, under the owner",
        LOADER,
    ]
    return "\n\n".join(parts)
