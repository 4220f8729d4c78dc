"""Run a worker script under `torchrun --standalone --nproc_per_node N` and read its JSON result.

Workers write one JSON file (rank 0) to the path given by `--result`; the test asserts on it.
`--standalone` picks a free rendezvous port, so concurrent test runs do not collide.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def run_workers(script: str, args: list[str], result: Path, nproc: int = 2, timeout: int = 300) -> dict:
    """Launch `tests/distributed/<script>` on `nproc` gloo ranks; return rank 0's JSON result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONWARNINGS"] = "ignore"
    cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "tests" / "distributed" / script), "--result", str(result), *args]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return json.loads(result.read_text())
