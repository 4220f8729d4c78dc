"""The sbatch files, run with SLURM's variables set and `srun`, `torchrun`, `scontrol` and
`python` replaced by recorders (executables first on PATH that write their argv): the exact
commands, node ranks and rendezvous endpoint each node would start."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SLURM = ROOT / "examples" / "slurm"

SRUN = r"""#!/bin/bash
# Records its argv, then runs the command once per node, as srun's tasks would.
printf '%s\0' "$@" > "$RECORD_DIR/srun.argv"
echo $$ > "$RECORD_DIR/srun.pid"
nodes=1
while [ $# -gt 0 ] && [[ "$1" == --* ]]; do
  case "$1" in --nodes=*) nodes=${1#--nodes=} ;; esac
  shift
done
if [ -n "${SRUN_SLEEP:-}" ]; then
  sleep "$SRUN_SLEEP" & child=$!
  trap 'kill $child; exit 143' TERM
  wait $child
fi
for ((i = 0; i < nodes; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i "$@" || exit $?; done
"""
RECORDER = r"""#!/bin/bash
printf '%s\0' "$@" > "$RECORD_DIR/NAME.node${SLURM_NODEID:-x}"
"""
SCONTROL = r"""#!/bin/bash
if [ "$1 $2" = "show hostnames" ]; then printf "%s\n" $FAKE_HOSTS; exit 0; fi
printf '%s\0' "$@" > "$RECORD_DIR/scontrol.argv"
if [ "$1" = requeue ]; then kill -TERM "$(cat "$RECORD_DIR/srun.pid")"; fi
"""


@pytest.fixture
def slurm(tmp_path):
    bin_dir, rec = tmp_path / "bin", tmp_path / "rec"
    bin_dir.mkdir()
    rec.mkdir()
    scripts = {"srun": SRUN, "scontrol": SCONTROL, "torchrun": RECORDER.replace("NAME", "torchrun"),
               "python": RECORDER.replace("NAME", "python")}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    submit = tmp_path / "submit"
    submit.mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RECORD_DIR": str(rec), "SLURM_SUBMIT_DIR": str(submit),
           "SLURM_JOB_ID": "4242", "FAKE_HOSTS": "gpu-017 gpu-018 gpu-019"}
    return env, rec, submit


def _argv(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\0")[:-1]


def _run(script: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(SLURM / script), *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _ppo_env(env, **extra):
    return {**env, "SLURM_JOB_NUM_NODES": "3", "SLURM_JOB_NODELIST": "gpu-[017-019]",
            "SLURM_GPUS_ON_NODE": "8", **extra}


def test_ppo_starts_one_torchrun_per_node_with_its_rank_and_the_first_nodes_endpoint(slurm):
    env, rec, submit = slurm
    out = _run("pacore_ppo.sbatch", _ppo_env(env, SLURM_RESTART_COUNT="0"),
               "--config", "examples/configs/pacore_ppo.yaml", "actor.lr=2e-6")
    port = str(20000 + 4242 % 20000)
    assert f"rendezvous=gpu-017:{port}" in out.stdout
    srun = _argv(rec / "srun.argv")
    log_dir = "logs/pacore-ppo-4242"
    assert srun[:4] == ["--nodes=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                        f"--output={log_dir}/node-%n.log"]
    assert srun[4:6] == ["bash", "-c"]
    assert (submit / log_dir).is_dir()
    for node in range(3):
        assert _argv(rec / f"torchrun.node{node}") == [
            "--nnodes=3", "--nproc-per-node=8", f"--node-rank={node}", "--master-addr=gpu-017",
            f"--master-port={port}", "examples/pacore_ppo.py", "--config", "examples/configs/pacore_ppo.yaml",
            "actor.lr=2e-6"]
    assert not (rec / "torchrun.node3").exists()


def test_ppo_restarted_after_requeue_resumes(slurm):
    env, rec, _ = slurm
    _run("pacore_ppo.sbatch", _ppo_env(env, SLURM_RESTART_COUNT="1", MASTER_PORT="29400"), "--config", "c.yaml")
    assert _argv(rec / "torchrun.node2") == [
        "--nnodes=3", "--nproc-per-node=8", "--node-rank=2", "--master-addr=gpu-017", "--master-port=29400",
        "examples/pacore_ppo.py", "--config", "c.yaml", "resume=true"]


def test_ppo_runs_in_the_container_through_pyxis(slurm):
    env, rec, submit = slurm
    _run("pacore_ppo.sbatch", _ppo_env(env, CONTAINER_IMAGE="/images/pacore.sqsh"), "--config", "c.yaml")
    srun = _argv(rec / "srun.argv")
    assert srun[4:7] == ["--container-image=/images/pacore.sqsh", f"--container-workdir={submit}",
                         f"--container-mounts={submit}:{submit}"]
    assert srun[7:9] == ["bash", "-c"]


def test_ppo_requeues_itself_on_sigusr1(slurm):
    env, rec, _ = slurm
    proc = subprocess.Popen(["bash", str(SLURM / "pacore_ppo.sbatch"), "--config", "c.yaml"],
                            env=_ppo_env(env, SRUN_SLEEP="30"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 30
        while not (rec / "srun.pid").exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        proc.send_signal(signal.SIGUSR1)  # what SLURM sends 300 s before the limit / on preemption
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _argv(rec / "scontrol.argv") == ["requeue", "4242"], out + err
    assert "requeueing job 4242" in out
    assert proc.returncode != 0  # srun was ended by the requeue


def test_pool_array_task_builds_its_shard(slurm):
    env, rec, submit = slurm
    args = ["--model", "/ckpt/Qwen3-8B", "--problems", "p.jsonl", "--num-messages", "24", "--out", "pools"]
    _run("build_pool.sbatch", {**env, "SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "2",
                               "SLURM_ARRAY_TASK_COUNT": "8"}, *args)
    assert _argv(rec / "srun.argv") == ["--nodes=1", "--ntasks=1", "--kill-on-bad-exit=1", "python",
                                        "tools/build_curriculum.py", "pool", "--shard", "3/8", *args]
    assert _argv(rec / "python.node0") == ["tools/build_curriculum.py", "pool", "--shard", "3/8", *args]


def test_pool_in_the_container(slurm):
    env, rec, submit = slurm
    _run("build_pool.sbatch", {**env, "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4",
                               "CONTAINER_IMAGE": "/images/pacore.sqsh"}, "--out", "pools")
    assert _argv(rec / "srun.argv")[3:5] == ["--container-image=/images/pacore.sqsh",
                                             f"--container-workdir={submit}"]
    assert _argv(rec / "python.node0")[2:4] == ["--shard", "0/4"]


def test_long_node_lists_do_not_kill_the_job_with_sigpipe(slurm):
    # More host names than a pipe buffer holds: a reader that stops after the first line
    # (head -n 1) would end scontrol with SIGPIPE, fatal under `set -o pipefail`.
    env, rec, _ = slurm
    hosts = " ".join(["gpu-017"] + [f"gpu-{i:05d}" for i in range(9000)])  # ~90 kB, over the 64 kB pipe buffer
    _run("pacore_ppo.sbatch", _ppo_env(env, FAKE_HOSTS=hosts), "--config", "c.yaml")
    assert "--master-addr=gpu-017" in _argv(rec / "torchrun.node0")
