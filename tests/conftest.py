"""Session fixtures shared by every test: tiny checkpoints made offline from fixed seeds."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# vLLM on CPU asks for 92% of memory for its KV cache unless told otherwise.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

BENCHMARKS = Path(os.environ.get("PACORE_BENCHMARKS", ROOT.parent / "shared" / "data" / "benchmarks"))


def _make(tmp_path_factory, arch: str) -> Path:
    from megatron_pacore.testing.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp(f"tiny_{arch}"), arch=arch, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny Qwen3 checkpoint + tokenizer directory."""
    return _make(tmp_path_factory, "qwen3")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """One tiny checkpoint per supported family: qwen3, qwen2, llama."""
    return {arch: _make(tmp_path_factory, arch) for arch in ("qwen3", "qwen2", "llama")}


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    if not BENCHMARKS.is_dir():
        pytest.fail(f"benchmark problems not found at {BENCHMARKS} (set PACORE_BENCHMARKS)")
    return BENCHMARKS


@pytest.fixture(scope="session")
async def vllm_engine(tiny_model):
    """One in-process vLLM async engine on the tiny model, shared by every test that needs a
    real engine (its start-up is the slowest step of the suite)."""
    from megatron_pacore.inference.vllm_engine import VLLMGenerator

    gen = VLLMGenerator(str(tiny_model), {"max_model_len": 4096, "seed": 0})
    yield gen
    await gen.close()
