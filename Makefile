# The two commands of the README. Both set up .venv first (scripts/install.sh, idempotent).
PY := .venv/bin/python
TINY := .cache/tiny-qwen3

.PHONY: install demo test bench clean

install:
	bash scripts/install.sh

# The main job on its CPU default: PaCoRe inference (level low = [4, 1]) with a tiny model
# made offline, on the shipped sample problems. Output: outputs/demo.jsonl
demo: install
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
