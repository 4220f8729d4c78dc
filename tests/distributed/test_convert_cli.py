"""`torchrun --nproc_per_node 2 tools/convert_hf.py ... --verify` ends with max_logit_diff=X."""
import os
import subprocess
from pathlib import Path

import pytest

from dist_launch import cpu_worker_env, launcher

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(args, timeout=240):
    env = cpu_worker_env(dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"))
    cmd = [*launcher(2), str(ROOT / "tools" / "convert_hf.py"), *args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("family,layout", [("qwen2", ["--tp", "2"]), ("qwen3", ["--pp", "2"])])
def test_verify_prints_max_logit_diff_last(tiny_models, tmp_path, family, layout):
    proc = _torchrun(["--hf", str(tiny_models[family]), "--out", str(tmp_path / "m"), *layout,
                      "--verify", "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("max_logit_diff="), proc.stdout
    assert float(last.split("=")[1]) <= 1e-4
