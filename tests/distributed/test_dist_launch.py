"""The CPU workers' environment: on any machine (GPU or not, TE installed or not) a worker sees
no CUDA, cannot import Transformer Engine or apex, and so gets the CPU shim and torch norms."""
import json
import subprocess
import sys

from dist_launch import cpu_worker_env, launcher

PROBE = r"""
import json, torch
out = {"cuda": torch.cuda.is_available()}
for name in ("transformer_engine", "apex"):
    try:
        __import__(name)
        out[name] = "imported"
    except ImportError as e:
        out[name] = "ImportError"
from megatron.core.transformer import transformer_block
out["final_norm"] = transformer_block.LayerNormImpl.__name__
from megatron_pacore.training import cpu_shim
cpu_shim.activate()
out["shim"] = cpu_shim.is_active() and torch.cuda.current_device() == "cpu"
print(json.dumps(out))
"""


def test_worker_env_hides_cuda_te_and_apex_even_when_they_are_installed(tmp_path):
    # Stand-ins for an installed Transformer Engine and apex, later on the path (as site-packages).
    for name in ("transformer_engine", "apex"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    env = cpu_worker_env()
    env["PYTHONPATH"] += f":{tmp_path}"
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"cuda": False, "transformer_engine": "ImportError", "apex": "ImportError",
                   "final_norm": "WrappedTorchNorm", "shim": True}


def test_workers_launch_through_this_interpreters_torch_distributed_run():
    assert launcher(2) == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
