# Shared by tools/test and tools/demo: create or reuse .venv and install graphc into it.
# torch: GRAPHC_TORCH (default "torch==2.13.0") is installed only when torch is missing, so a
# user who brings a CUDA build keeps it.  Set GRAPHC_SKIP_INSTALL=1 to use .venv as it is.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
if [ "${GRAPHC_SKIP_INSTALL:-0}" != 1 ]; then
  stamp=".venv/.graphc-installed"
  want="$(cat pyproject.toml | sha256sum | cut -c1-16)-${1:-base}"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
      "$VPY" -m pip install -q "${GRAPHC_TORCH:-torch==2.13.0}"
    fi
    extras="${1:-}"
    "$VPY" -m pip install -q -e ".${extras:+[$extras]}"
    echo "$want" > "$stamp"
  fi
fi
export PATH="$ROOT/.venv/bin:$PATH"
