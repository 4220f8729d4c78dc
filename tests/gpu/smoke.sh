#!/usr/bin/env bash
# GPU smoke run: what to run whenever a GPU machine is lent. One GPU, within 8 minutes.
#   bash tests/gpu/smoke.sh            # in the image (docker run --gpus all ... bash tests/gpu/smoke.sh)
#                                      # or on any CUDA machine (then it makes the GPU install first)
# Steps, each timed (a line "timing <step> <seconds> <status>"):
#   install     nothing if this Python already has CUDA torch, TE, vLLM, Megatron-Core and the
#               package; otherwise `EXTRAS=gpu,test bash scripts/install.sh` and .venv's Python
#   tests/gpu   the GPU tests on one GPU (TE layer spec parity, bf16, recomputation)
#   fp8         TE FP8 forward/backward of the tiny model against bf16
#   vllm        CUDA vLLM generation: `pacore infer` on the tiny model
#   weight-sync the colocated engine's sync of CUDA tensors and CUDA IPC (tests/gpu/test_weight_transfer.py)
#   ppo         two PPO iterations of examples/pacore_ppo.py on the tiny demo's data (TP=1, TE, THD)
# Exits non-zero if any step failed or the time budget (SMOKE_BUDGET_S, default 480) ran out.
# Overrides: SMOKE_PPO_ARGS (more key=value overrides of the PPO run).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 NVIDIA_TF32_OVERRIDE=0 PACORE_REQUIRE_CUDA=1
BUDGET=${SMOKE_BUDGET_S:-480}
WORK=${SMOKE_DIR:-$(mktemp -d /tmp/pacore-smoke.XXXXXX)}
T0=$(date +%s)
failures=()
summary=()

remaining() { echo $((BUDGET - ($(date +%s) - T0))); }

# step NAME CMD...: runs CMD (a command or an exported function) under the time left, prints
# and records its timing and status.
step() {
  local name=$1 left start ms status rc
  shift
  left=$(remaining)
  if [ "$left" -le 0 ]; then
    failures+=("$name (no time left)"); summary+=("timing $name - not-run (no time left)"); return
  fi
  echo "=== $name: $*"
  start=$(date +%s%N)
  timeout "$left" bash -c '"$@"' step "$@"
  rc=$?
  ms=$((($(date +%s%N) - start) / 1000000))
  status=ok
  if [ "$rc" -ne 0 ]; then status="FAILED(rc=$rc)"; failures+=("$name"); fi
  summary+=("$(printf 'timing %-12s %5d.%01ds %s' "$name" $((ms / 1000)) $((ms % 1000 / 100)) "$status")")
  echo "${summary[-1]}"
}

skip() {
  echo "=== $1: SKIPPED: $2"
  summary+=("$(printf 'timing %-12s %7s %s' "$1" "-" "skipped ($2)")")
}

has_everything() {
  "$1" - <<'EOF' 2>/dev/null
import importlib, torch
assert torch.cuda.is_available(), "no CUDA"
for name in ("transformer_engine.pytorch", "vllm", "megatron.core", "megatron_pacore"):
    importlib.import_module(name)
EOF
}

do_install() {
  for candidate in "${PYTHON:-python}" .venv/bin/python; do
    if command -v "$candidate" >/dev/null 2>&1 && has_everything "$candidate"; then
      echo "$candidate has CUDA torch, TE, vLLM and Megatron-Core: installing nothing"
      echo "$candidate" > "$WORK/python"; return 0
    fi
  done
  EXTRAS=gpu,test bash scripts/install.sh && has_everything .venv/bin/python && echo .venv/bin/python > "$WORK/python"
}

echo "smoke: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1) work=$WORK budget=${BUDGET}s"
export WORK
export -f has_everything do_install
step install do_install
if [ ! -s "$WORK/python" ]; then
  echo "smoke: no working GPU install; stopping"; printf '%s\n' "${summary[@]}"; exit 1
fi
PY=$(cat "$WORK/python")
"$PY" -c "import torch, vllm, transformer_engine as te, megatron.core as mc; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'vllm', vllm.__version__, 'te', te.__version__, 'mcore', mc.__version__)"

TINY=$WORK/tiny-qwen3
"$PY" tools/make_tiny_model.py --out "$TINY" --arch qwen3 --seed 0 >/dev/null || failures+=("tiny model")

step tests/gpu "$PY" -m pytest -q -x -p no:cacheprovider tests/gpu -k "not fp8"
step fp8 "$PY" -m pytest -q -x -p no:cacheprovider tests/gpu/test_te_paths.py -k fp8

check_infer() {
  VLLM_LOGGING_LEVEL=WARNING "$PY" -m megatron_pacore.cli infer --model "$TINY" \
    --input examples/data/sample_problems.jsonl --output "$WORK/infer.jsonl" --level low --max-tokens 64 \
    --vllm-arg max_model_len=4096 --vllm-arg gpu_memory_utilization=0.3 || return 1
  "$PY" - "$WORK/infer.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
ok = [r for r in rows if r["status"] == "ok"]
tokens = sum(r["test_time_tokens"] for r in rows)
print(f"vllm: {len(ok)}/{len(rows)} problems ok, {tokens} generated tokens")
sys.exit(0 if rows and len(ok) == len(rows) and tokens > 0 else 1)
EOF
}
export PY TINY
export -f check_infer
step vllm check_infer

# Weight sync into CUDA vLLM: the colocated engine (reload of CUDA tensors, sleep mode) and
# CUDA IPC to an engine in its own process (tests/gpu/test_weight_transfer.py; one GPU).
step weight-sync "$PY" -m pytest -q -x -p no:cacheprovider tests/gpu/test_weight_transfer.py

# Two PPO iterations of the real trainer on one GPU: the CPU demo's data (tiny policy, toy
# pools, made here on CUDA vLLM), TP=1, Transformer Engine spec, THD packing, sleep mode.
run_ppo() {
  VLLM_LOGGING_LEVEL=WARNING "$PY" -m megatron_pacore.testing.tiny_demo --cache-dir "$WORK/tiny_demo" || return 1
  "$PY" -m torch.distributed.run --standalone --nproc-per-node=1 examples/pacore_ppo.py \
    --config examples/configs/tiny_cpu.yaml model.path="$WORK/tiny_demo/policy" \
    stages.0.data="$WORK/tiny_demo/stages/stage1.jsonl" stages.0.iterations=2 parallel.tp=1 \
    parallel.device=cuda rollout.gpu_memory_utilization=0.3 rollout.weight_sync.check_weights=true \
    logging.dir="$WORK/ppo" "$@"
}
export -f run_ppo
# shellcheck disable=SC2086  # word splitting of the override is intended
step ppo run_ppo ${SMOKE_PPO_ARGS:-}

echo "=== summary (total $(($(date +%s) - T0))s of ${BUDGET}s)"
printf '%s\n' "${summary[@]}"
if [ "${#failures[@]}" -gt 0 ]; then
  echo "smoke: FAILED: ${failures[*]}"; exit 1
fi
echo "smoke: all steps passed"
