"""GPU tests: Transformer Engine layer spec, FP8, sequence and context parallelism.

Every test here is skipped on machines without CUDA (and the multi-GPU ones below 2 GPUs).
TF32 is switched off so that fp32 comparisons with `transformers` are meaningful.
"""
import os

import pytest
import torch

os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

# `make test` on a GPU machine sets PACORE_REQUIRE_CUDA=1: there a torch without CUDA (a CPU
# venv) is an install error to report, not a reason to skip every test here.
if os.environ.get("PACORE_REQUIRE_CUDA") == "1" and not torch.cuda.is_available():
    raise pytest.UsageError(
        "PACORE_REQUIRE_CUDA=1 (a GPU machine) but this torch sees no CUDA "
        f"(torch {torch.__version__}): run `EXTRAS=gpu,test bash scripts/install.sh`")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/gpu/" in str(item.fspath):
            item.add_marker(pytest.mark.gpu)
            item.add_marker(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))
