#!/usr/bin/env bash
# Create (or update) the pinned reference venv for tests/reference.
#   tests/reference/setup_venv.sh [VENV_DIR]     (default: tests/reference/.venv)
# Idempotent: an existing venv is reused and pip only installs what differs from requirements.txt.
# Needs python3 (3.11 recommended; the goldens were made with 3.11) and network access to PyPI.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.venv}"
python="${PYTHON:-python3}"
OPEN_CLIP="open-clip-torch==3.3.0"

say() { echo "[setup_venv] $*"; }

if [[ -x "$venv/bin/python" ]]; then
  say "reusing venv $venv ($("$venv/bin/python" --version 2>&1))"
else
  say "creating venv $venv with $("$python" --version 2>&1)"
  "$python" -m venv "$venv"
fi
pyver="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$pyver" == "3.11" ]] || say "warning: python $pyver; goldens were generated with 3.11"

say "upgrading pip"
"$venv/bin/python" -m pip install --quiet --upgrade pip
say "installing $here/requirements.txt"
"$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
say "installing $OPEN_CLIP --no-deps (for bpe_simple_vocab_16e6.txt.gz only)"
"$venv/bin/python" -m pip install --quiet --no-deps "$OPEN_CLIP"

say "checking"
"$venv/bin/python" - <<'PY'
import importlib.util, os
import torch, diffusers, transformers, safetensors, tokenizers
loc = importlib.util.find_spec("open_clip").submodule_search_locations[0]
gz = os.path.join(loc, "bpe_simple_vocab_16e6.txt.gz")
assert os.path.isfile(gz), gz
print(f"[setup_venv] ok: torch {torch.__version__}, diffusers {diffusers.__version__}, "
      f"transformers {transformers.__version__}, safetensors {safetensors.__version__}, "
      f"tokenizers {tokenizers.__version__}; CLIP BPE at {gz}")
PY
say "done: run $venv/bin/python $here/make_golden.py --help"
