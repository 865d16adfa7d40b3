#!/usr/bin/env bash
# Creates bench/.venv-litellm with LiteLLM's proxy, the comparison target of bench/proxy_throughput.py.
# It lives in its own venv so LiteLLM's large, tightly pinned dependency set never touches the project's venv.
# Usage: bash bench/setup_litellm.sh   (PYTHON=python3.12 or LITELLM_SPEC='litellm[proxy]==X' to override)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-litellm"
python="${PYTHON:-python3}"
# Pinned: the version the README's table was measured with; LITELLM_SPEC='litellm[proxy]' for the newest.
spec="${LITELLM_SPEC:-litellm[proxy]==1.106.2}"

if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
# Python 3.13's venv writes this itself: git and ruff then skip the venv without a line in any .gitignore.
printf '*\n' > "$venv/.gitignore"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "$spec"
"$venv/bin/python" -c 'import importlib.metadata as m; print("litellm", m.version("litellm"))'
echo "LiteLLM proxy ready: $venv/bin/litellm"
