# Shared by tools/test, tools/demo, tools/bench and tools/graphc: create or reuse .venv and
# install graphc into it.
# torch: GRAPHC_TORCH (default "torch==2.13.0") is installed only when torch is missing, so a
# user who brings a CUDA build keeps it.  Set GRAPHC_SKIP_INSTALL=1 to use .venv as it is.
# The stamp records pyproject.toml's hash and the extras installed; a caller that needs fewer
# extras than are installed (tools/demo after tools/test) reuses the environment as it is.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
_say() { [ "${GRAPHC_QUIET_SETUP:-0}" = 1 ] || echo "setup: $*" >&2; }
if [ ! -x .venv/bin/python ]; then
  _say "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
if [ "${GRAPHC_SKIP_INSTALL:-0}" != 1 ]; then
  stamp=".venv/.graphc-installed"
  hash="$(sha256sum pyproject.toml | cut -c1-16)"
  want="${1:-}"
  have_hash="" have_extras=""
  [ -f "$stamp" ] && read -r have_hash have_extras < "$stamp" || true
  if [ "$have_hash" != "$hash" ] || { [ -n "$want" ] && [[ ",$have_extras," != *",$want,"* ]]; }; then
    "$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
      _say "installing ${GRAPHC_TORCH:-torch==2.13.0} (CPU build; a minute or two the first time)"
      "$VPY" -m pip install -q "${GRAPHC_TORCH:-torch==2.13.0}" 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; } >&2
    fi
    # Keep the extras installed before (demo after test must not drop the test tools).
    extras="$want"
    [ "$have_hash" = "$hash" ] && [ -n "$have_extras" ] && extras="$(printf '%s\n' ${have_extras//,/ } $want | sort -u | paste -sd, -)"
    _say "installing graphc${extras:+[$extras]} and its dependencies into .venv"
    PYTHONWARNINGS=ignore "$VPY" -m pip install -q -e ".${extras:+[$extras]}" 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; } >&2
    echo "$hash $extras" > "$stamp"
    _say "done"
  fi
fi
export PATH="$ROOT/.venv/bin:$PATH"
