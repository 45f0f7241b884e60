"""Where graphc may write: "graphc replaces only what graphc wrote" (no torch, no onnx).

Every command that writes goes through this module, before it does any work:

* **Folder outputs** (``compile`` OUT_DIR, ``train`` RUN_DIR) carry a ``manifest.json`` whose
  ``"graphc_output"`` names their kind and whose ``"files"`` lists the entries graphc wrote
  there.  An existing folder is reused only when it is empty or a previous graphc output of
  the same kind; ``force`` lets graphc write into any other folder.  Either way graphc only
  ever removes or replaces entries *named* by the old manifest or by :data:`FOLDER_FILES`
  (what this command writes): a user's other files in the folder are never touched.
  A file, FIFO or device is never replaced by a folder.  ``/``, the home folder, the current
  folder (or one above it) and a folder holding the spec are refused even with ``force``.
* **Single-file outputs** (``export``, ``graph -o``, ``schema -o``) are written to a staging
  folder and moved into place only on success.  An existing regular file is replaced when it
  is empty or graphc recognises it as its own (the command's ``is_ours`` check: ONNX metadata,
  a marker line, the schema's ``$id``), or with ``force``.  A character device or FIFO is
  written *into* (``-o /dev/null`` discards), never renamed over or unlinked; a FIFO without a
  reader is refused rather than waited on.  A folder, block device or socket is refused.

Every refusal is one ``graphc: error:`` line (exit 1) and leaves everything as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphc.errors import GraphcError
from graphc.io import umask, write_text

MANIFEST = "manifest.json"
MARKER_KEY = "graphc_output"
# What graphc writes into each kind of output folder: the only names it ever replaces or
# removes there (plus those a previous graphc manifest of the same kind lists).
FOLDER_FILES: dict[str, tuple[str, ...]] = {
    "compile": ("model.py", "weights.safetensors", "model.onnx", "verify.json", "summary.json", MANIFEST),
    "run": ("checkpoints", "best.safetensors", "metrics.csv", "results.json", "curves.png", "tb", "weights_plan.json",
            "config.yaml", "spec.yaml", "data.json", "classes.json", "vocab.json", "tokenizer.json", MANIFEST),
}
READ_CAP = 1 << 20  # bytes read of an existing manifest or text file to recognise it


class OutputError(GraphcError):
    """An output path graphc must not write to (the user's data, a special file, ...)."""


# --- paths that are never an output folder ---------------------------------------------------


def _protected(out: Path, spec: Path | None) -> str | None:
    """Why ``out`` may never be an output folder (even with ``--force``), or None."""
    real = out.resolve()
    if real == Path(real.anchor):
        return "the root folder"
    if real == Path.home().resolve():
        return "your home folder"
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        return "the current folder" if real == cwd else "a folder above the current one"
    if spec is not None:
        s = spec.resolve()
        if real in s.parents:
            return f"the folder holding the spec {spec}"
    return None


def spec_path(spec: object) -> Path | None:
    """The spec's file when ``spec`` names one (a path or a loaded ``Spec``)."""
    if isinstance(spec, str | Path):
        return Path(spec)
    file = getattr(spec, "file", None)
    return Path(file) if isinstance(file, str) and not file.startswith("<") else None


# --- folder outputs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Folder:
    """An output folder that passed :func:`check_folder`, and what graphc may replace in it."""

    path: Path
    kind: str
    exists: bool
    owned: tuple[str, ...]  # entries graphc may remove or replace (old manifest + this kind's)
    previous: bool  # a previous graphc output of this kind
    finished: bool = False  # a run folder holding results.json
    force: bool = False  # the user said --force


def read_manifest(folder: Path) -> dict[str, object] | None:
    """``folder/manifest.json`` as a dict when graphc wrote it (it has the kind marker)."""
    path = folder / MANIFEST
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        with open(path, "rb") as f:
            data = json.loads(f.read(READ_CAP))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get(MARKER_KEY), str) else None


def _plain_names(items: object) -> tuple[str, ...]:
    """Entry names from a manifest, keeping only plain names (no ``/``, ``..``, ``.``)."""
    if not isinstance(items, list | dict):
        return ()
    return tuple(n for n in items if isinstance(n, str) and n not in ("", ".", "..") and "/" not in n and "\0" not in n)


def check_folder(out: str | Path, kind: str, force: bool = False, spec: Path | None = None,
                 resume: bool = False) -> Folder:
    """Decide whether ``out`` may receive a ``kind`` output folder; raise :class:`OutputError` if not.

    Changes nothing.  ``resume`` (train) accepts a run folder graphc can continue.
    """
    out = Path(out)
    why = _protected(out, spec)
    if why:
        raise OutputError(f"{out}: refusing to write a {kind} folder into {why}; name a new folder")
    try:
        st = out.lstat()
    except FileNotFoundError:
        return Folder(out, kind, False, FOLDER_FILES[kind], False, force=force)
    except OSError as e:
        raise OutputError(f"{out}: cannot use this path: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{out}: is a symbolic link; graphc writes a {kind} folder only to a real folder")
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{out}: exists and is {_describe(st.st_mode)}; a {kind} folder never replaces it")
    man = read_manifest(out)
    previous = man is not None and man.get(MARKER_KEY) == kind
    owned = tuple(dict.fromkeys((*(_plain_names(man.get("files")) if previous and man else ()), *FOLDER_FILES[kind])))
    entries = set(os.listdir(out))
    finished = kind == "run" and "results.json" in entries
    folder = Folder(out, kind, True, owned, previous, finished, force)
    if force or not entries:
        return folder
    if kind == "run" and resume:
        return folder
    if not previous:
        other = f"graphc {man.get(MARKER_KEY)} output" if man else "folder graphc did not write"
        count = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
        raise OutputError(f"{out}: exists and is a {other} ({count}); graphc replaces only "
                          f"its own {kind} output: name a new folder, or use --force to write its files into this one")
    if kind == "run":
        state = "a finished run" if finished else "an unfinished run"
        raise OutputError(f"{out}: holds {state}; use --resume to continue it or --force to start afresh "
                          f"(removes only the old run's own files)")
    return folder


def _describe(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def clear_owned(folder: Folder) -> None:
    """Remove the entries graphc owns in ``folder`` (``--force`` / a fresh run); nothing else."""
    for name in folder.owned:
        _remove(folder.path / name)


def _remove(path: Path) -> None:
    """Remove one entry graphc owns, never following a link out of the folder."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def write_marker(folder: Path, kind: str) -> None:
    """Claim ``folder`` as a ``kind`` output (run folders; compile writes its own manifest)."""
    write_text(folder / MANIFEST, json.dumps({MARKER_KEY: kind, "files": list(FOLDER_FILES[kind])}, indent=2) + "\n")


def install_folder(tmp: Path, folder: Folder, spec: Path | None = None) -> None:
    """Move the complete folder ``tmp`` to ``folder.path``.

    A new or empty target is one rename.  When the target holds only entries graphc owns,
    it is swapped out whole and those entries removed; otherwise (the user's own files are
    there: ``--force``, or files added to a previous output) each of graphc's entries is
    replaced one by one and the user's files stay where they are.
    """
    again = check_folder(folder.path, folder.kind, folder.force, spec)  # the folder may have changed since
    out = again.path
    if not again.exists or not os.listdir(out):
        os.replace(tmp, out)
        return
    owned = set(folder.owned) | set(again.owned)
    entries = set(os.listdir(out))
    if entries <= owned:
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, aside / out.name)
        os.replace(tmp, out)
        clear_owned(Folder(aside / out.name, folder.kind, True, tuple(owned), True))
        with contextlib.suppress(OSError):
            os.rmdir(aside / out.name)
            os.rmdir(aside)
        return
    new = set(os.listdir(tmp))
    for name in sorted(owned - new):
        _remove(out / name)
    for name in sorted(new - {MANIFEST}):
        if (out / name).is_dir() and not (out / name).is_symlink():
            _remove(out / name)
        os.replace(tmp / name, out / name)
    os.replace(tmp / MANIFEST, out / MANIFEST)  # last: the folder is graphc's once it is complete
    os.rmdir(tmp)


def stage_folder(folder: Folder) -> Path:
    """A new temporary folder beside ``folder.path`` to assemble the output in."""
    parent = folder.path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.path.name}.", dir=parent))
    except OSError as e:
        raise OutputError(f"{folder.path}: cannot create the output folder: {e.strerror}") from None
    tmp.chmod(0o777 & ~umask())
    return tmp


# --- single-file outputs --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A single-file output that passed :func:`check_file`."""

    path: Path  # what the user named
    real: Path  # where the bytes go (symbolic links followed)
    stream: bool  # a character device or FIFO: write into it
    fd: int | None = None  # a stream target is opened at check time (a FIFO's reader is checked then)


def check_file(out: str | Path, force: bool = False, is_ours: Callable[[Path], bool] | None = None,
               what: str = "output") -> Target:
    """Decide whether ``out`` may receive a single file; raise :class:`OutputError` if not."""
    out = Path(out)
    real = Path(os.path.realpath(out))
    try:
        st = real.stat()
    except FileNotFoundError:
        return Target(out, real, False)
    except OSError as e:
        raise OutputError(f"{out}: cannot use this path: {e.strerror}") from None
    mode = st.st_mode
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return Target(out, real, True, _open_stream(out, real))
    if not stat.S_ISREG(mode):
        raise OutputError(f"{out}: exists and is {_describe(mode)}; name a file to write the {what} to")
    if force or st.st_size == 0 or (is_ours is not None and _safe(is_ours, real)):
        return Target(out, real, False)
    raise OutputError(f"{out}: exists and graphc did not write it; graphc replaces only its own {what}: "
                      "name a new file, or use --force to replace it")


def _safe(is_ours: Callable[[Path], bool], path: Path) -> bool:
    try:
        return bool(is_ours(path))
    except Exception:  # any reader failure means "not recognised", never a crash
        return False


@contextlib.contextmanager
def file_output(target: Target) -> Iterator[Path]:
    """Yield a staging path with the output's own name; on success it becomes the output.

    Regular targets: the staging folder sits beside the output and the file (and a
    ``NAME.data`` companion written with it) is moved into place with ``os.replace``.
    Devices and FIFOs: the bytes are copied into the existing node, which stays as it was.
    Enter it right after :func:`check_file`: it closes a stream target's descriptor.
    """
    parent = target.real.parent if not target.stream else None
    try:
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{target.real.name}.", dir=parent))
    except OSError as e:
        _close(target)
        raise OutputError(f"{target.path}: cannot write here: {e.strerror}") from None
    try:
        staged = stage / target.real.name
        yield staged
        if target.stream:
            _stream_into(staged, target)
        else:
            for f in sorted(stage.iterdir(), reverse=True):  # NAME.data before NAME
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.chmod(f, 0o666 & ~umask())
                os.replace(f, target.real.parent / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        _close(target)


def _open_stream(out: Path, real: Path) -> int:
    """Open a device or FIFO for writing without creating or truncating it; a FIFO with no
    reader is refused at once (a blocking open would wait forever)."""
    try:
        fd = os.open(real, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise OutputError(f"{out}: is a FIFO with no reader; start the reader first") from None
        raise OutputError(f"{out}: cannot write into it: {e.strerror}") from None
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)  # non-blocking was only for the open
    return fd


def _close(target: Target) -> None:
    if target.fd is not None:
        with contextlib.suppress(OSError):
            os.close(target.fd)


def _stream_into(staged: Path, target: Target) -> None:
    """Copy ``staged`` into the open device or FIFO (never created, truncated or replaced)."""
    if any(p != staged for p in staged.parent.iterdir()):
        raise OutputError(f"{target.path}: this output needs a companion file beside it and cannot go to a device or FIFO")
    assert target.fd is not None
    try:
        with open(staged, "rb") as src, os.fdopen(target.fd, "wb", closefd=False) as dst:
            shutil.copyfileobj(src, dst)
    except OSError as e:
        raise OutputError(f"{target.path}: writing into it failed: {e.strerror}") from None


def write_file(target: Target, data: bytes) -> None:
    """Write ``data`` as the output ``target`` (see :func:`file_output`)."""
    with file_output(target) as path:
        path.write_bytes(data)


# --- text outputs (graph, schema) ------------------------------------------------------------


def emit_text(text: str, output: str | None, force: bool = False, marker: str = "", is_ours: Any = None, what: str = "output") -> int:
    """Write ``text`` to stdout, or to ``output`` under graphc's output rules (graphc.outputs):
    a new file, graphc's own previous one (``is_ours``), any file with ``force``, or into a
    device/FIFO.  ``marker`` (a comment line) is appended to files so a re-run recognises them."""
    if output:
        write_file(check_file(output, force, is_ours, what), (text + marker).encode("utf-8"))
        print(f"wrote {output}")
    else:
        sys.stdout.write(text)
    return 0


SCHEMA_ID = "https://graphc.dev/schema/"  # the `$id` prefix of every JSON Schema graphc writes


def ends_with_marker(marker: str) -> Any:
    """An ``is_ours`` check: the file's last line is graphc's marker comment."""

    def check(path: Any) -> bool:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - len(marker.encode())))
            return f.read() == marker.encode()

    return check


def is_graphc_schema(path: Any) -> bool:
    """A JSON Schema graphc wrote: its ``$id`` is graphc's (read with a size cap)."""
    with open(path, "rb") as f:
        data = json.loads(f.read(READ_CAP * 16))
    return isinstance(data, dict) and str(data.get("$id", "")).startswith(SCHEMA_ID)
