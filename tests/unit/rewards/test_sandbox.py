"""Adversarial programs: each ends within the limits with a verdict, and the host stays
healthy (no process of the sandbox left, no file written, the grader still grades).

Programs marked "kernel layer" run with the in-process audit hook off (and use ctypes), to
check that the namespaces, the uid and the resource limits hold on their own, at each isolation
level this machine can give: "bwrap" (bubblewrap) and "unshare" (the fallback).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import subprocess
import sys

from megatron_pacore.rewards.code import run_test
from megatron_pacore.rewards.sandbox import SandboxLimits, SandboxPool, isolation, sandbox_uids

LIMITS = SandboxLimits(cpu_s=1, wall_s=2, memory_mb=512, processes=16, output_bytes=1 << 20)
ANY = {"input": "", "output": "unreachable"}


def sandbox_processes() -> list[int]:
    """Live processes running under any sandbox uid of this test process."""
    uids = sandbox_uids()
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid in uids:
                    pids.append(int(name))
            except FileNotFoundError:
                pass
    return pids


def run(code: str, test: dict = ANY, limits: SandboxLimits = LIMITS, pool=None, audit_hook: bool = True):
    start = time.monotonic()
    verdict = run_test(code, test, limits, pool, audit_hook=audit_hook)
    elapsed = time.monotonic() - start
    assert elapsed < limits.wall_timeout_s + 3, f"took {elapsed:.1f}s"
    assert sandbox_processes() == []
    return verdict


@pytest.fixture(autouse=True)
def grader_still_works():
    yield
    assert run_test("print(sum(map(int, input().split())))", {"input": "2 3", "output": "5"}, LIMITS).passed


@pytest.fixture(scope="module")
def guards():
    return isolation()


@pytest.fixture(scope="module", params=["bwrap", "unshare"])
def level_pool(request):
    """A pool at each isolation level (kernel-layer tests run at both)."""
    pool = SandboxPool(1, request.param)
    yield request.param, pool
    pool.close()


def test_this_machine_gives_bubblewrap_namespaces(guards):
    # bubblewrap is installed by scripts/install.sh (and the Dockerfile); the default pool uses it.
    assert guards == {"isolation": "bwrap", "network": "netns", "filesystem": "bwrap-minimal-root"}


def test_fallback_level_is_recorded_in_every_verdict():
    pool = SandboxPool(1, "unshare")
    try:
        v = run_test("print(1)", {"output": "1"}, LIMITS, pool)
        guards = isolation(pool)
        if os.geteuid() == 0:  # as root the fallback still makes its namespaces
            assert (v.verdict, v.isolation) == ("passed", "unshare")
            assert guards == {"isolation": "unshare", "network": "netns", "filesystem": "read-only-mounts"}
        else:  # off root it may be left with the audit hook alone, and says so
            assert v.verdict == "passed" and v.isolation in ("unshare", "audit-hook")
    finally:
        pool.close()


def test_infinite_loop_hits_the_cpu_limit():
    # Wall clock to spare: on a loaded machine 1 CPU second can take several seconds.
    v = run("while True:\n    pass", limits=SandboxLimits(cpu_s=1, wall_s=20, memory_mb=512))
    assert (v.verdict, v.detail) == ("timeout", "CPU limit of 1s")


def test_sleeping_forever_hits_the_wall_clock_limit():
    v = run("import time\ntime.sleep(3600)")
    assert (v.verdict, v.detail) == ("timeout", "wall-clock limit of 2s")


def test_fork_bomb_is_a_violation():
    v = run("import os\nwhile True:\n    os.fork()")
    assert v.verdict == "sandbox_violation" and v.detail.startswith("os.fork")


def test_fork_bomb_through_ctypes_is_contained_and_swept(level_pool):
    """Kernel layer: RLIMIT_NPROC bounds it, children that leave the session are still
    killed by uid when the wall clock runs out."""
    code = "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    if libc.fork() == 0:\n        libc.setsid()"
    v = run(code, pool=level_pool[1], audit_hook=False)
    assert v.verdict == "timeout"


def test_subprocess_is_a_violation():
    v = run("import subprocess\nsubprocess.run(['ls', '/'])")
    assert v.verdict == "sandbox_violation" and "subprocess.Popen" in v.detail


def test_memory_bomb_hits_the_memory_limit():
    # CPU to spare: zeroing 256 MiB must not hit the CPU limit first on a loaded machine.
    limits = SandboxLimits(cpu_s=5, wall_s=10, memory_mb=256)
    v = run("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", limits=limits)
    assert (v.verdict, v.detail) == ("memory", "memory limit of 256 MiB")
    assert run("x = 'x' * 10**10").verdict == "memory"


def test_socket_connect_to_localhost_is_a_violation():
    v = run("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 22))")
    assert v.verdict == "sandbox_violation" and "socket.connect" in v.detail
    v = run("import socket\nsocket.create_connection(('localhost', 80), timeout=1)")
    assert v.verdict == "sandbox_violation" and "socket.getaddrinfo" in v.detail


def test_socket_connect_through_ctypes_finds_no_network(level_pool):
    """Kernel layer: in the sandbox's own network namespace no outside address is reachable
    (ENETUNREACH) and the host's loopback services are not there (the "unshare" namespace
    has its loopback down: ENETUNREACH; bubblewrap brings up an empty one: ECONNREFUSED)."""
    code = (
        "import ctypes, struct\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "for ip in ([1, 1, 1, 1], [127, 0, 0, 1]):\n"
        "    fd = libc.socket(2, 1, 0)\n"
        "    addr = struct.pack('=H', 2) + struct.pack('!H', 22) + bytes(ip) + bytes(8)\n"
        "    print(libc.connect(fd, addr, 16), ctypes.get_errno())"
    )
    level, pool = level_pool
    loopback = "-1 111" if level == "bwrap" else "-1 101"
    v = run(code, {"output": f"-1 101\n{loopback}"}, pool=pool, audit_hook=False)
    assert v.verdict == "passed", (v.verdict, v.stdout)


def test_writing_to_the_home_directory_is_a_violation():
    target = Path.home() / f"pacore_sandbox_probe_{os.getpid()}.txt"
    v = run(f"open({str(target)!r}, 'w').write('pwned')")
    assert v.verdict == "sandbox_violation" and str(target) in v.detail
    assert not target.exists()


def test_writing_outside_through_ctypes_hits_a_read_only_filesystem(level_pool):
    """Kernel layer: /tmp is world-writable on the host, read-only in the sandbox."""
    target = f"/tmp/pacore_sandbox_probe_{os.getpid()}.txt"
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"print(libc.open({target.encode()!r}, 0o101, 0o644), ctypes.get_errno())"
    )
    v = run(code, {"output": "-1 30"}, pool=level_pool[1], audit_hook=False)  # EROFS
    assert v.verdict == "passed", (v.verdict, v.stdout)
    assert not os.path.exists(target)


def test_home_directory_contents_are_hidden():
    marker = Path.home() / f"pacore_sandbox_secret_{os.getpid()}"
    marker.write_text("token")
    try:
        code = f"import os\nprint(os.path.exists({str(marker)!r}))"
        assert run(code, {"output": "False"}).verdict == "passed"
    finally:
        marker.unlink()


def test_environment_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("PACORE_TEST_SECRET", "hunter2")
    code = "import os\nprint(os.environ.get('PACORE_TEST_SECRET', 'none'), sorted(os.environ)[:3])"
    v = run(code, {"output": "none ['HOME', 'LANG', 'MKL_NUM_THREADS']"})
    assert v.verdict == "passed", v.stdout


def test_reading_another_process_environment_is_a_violation():
    v = run("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())")
    assert v.verdict == "sandbox_violation" and "environ" in v.detail


def test_printing_a_gigabyte_stops_at_the_output_limit():
    v = run("import sys\nchunk = 'x' * 65536\nfor _ in range(16384):\n    sys.stdout.write(chunk)")
    assert (v.verdict, v.detail) == ("sandbox_violation", "output limit of 1048576 bytes exceeded")


def test_killing_the_parent_is_a_violation():
    v = run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    assert v.verdict == "sandbox_violation"


# -- what only the bwrap level gives: each test shows the fallback failing it ------------


def _probe_both(code: str, test: dict, bwrap_pool, unshare_pool):
    return (run(code, test, pool=bwrap_pool, audit_hook=False),
            run(code, test, pool=unshare_pool, audit_hook=False))


@pytest.fixture(scope="module")
def pools():
    b, u = SandboxPool(1, "bwrap"), SandboxPool(1, "unshare")
    yield b, u
    b.close()
    u.close()


def _world_readable(path: Path) -> bool:
    """Whether a user other than the owner may read `path` (o+r, and o+x on every parent)."""
    import stat

    if not path.stat().st_mode & stat.S_IROTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)


def test_world_readable_host_files_are_unreadable(pools, tmp_path):
    """The project's files and benchmark data (world-readable on the host) do not exist in
    the sandbox; the fallback reads them."""
    secret = Path(f"/tmp/pacore_benchmark_answers_{os.getpid()}.jsonl")
    secret.write_text("answer 42")
    secret.chmod(0o644)
    project = Path(__file__).resolve()
    try:
        code = (f"import os\nfor p in ({str(secret)!r}, {str(project)!r}):\n"
                "    try:\n        open(p).read(1)\n        print('read')\n"
                "    except OSError as e:\n        print(type(e).__name__)")
        hidden, fallback = _probe_both(code, {"output": "FileNotFoundError\nFileNotFoundError"}, *pools)
        assert hidden.verdict == "passed", hidden.stdout
        # The weakness bwrap removes: the fallback (another uid, same filesystem) reads what
        # others may read. The checkout itself may sit below a private directory (a CI clone
        # in a mktemp -d folder), in which case the fallback is refused by permissions instead.
        project_expected = "read" if _world_readable(project) else "PermissionError"
        assert fallback.stdout.split() == ["read", project_expected]
    finally:
        secret.unlink()


def test_other_processes_are_invisible_and_unsignalable(pools):
    """A host process: its /proc entry does not exist and kill() finds no such process
    (ESRCH); the fallback sees it (and, as root, EPERM spares it only thanks to the uid)."""
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code = (
            "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"print(os.path.exists('/proc/{host.pid}'), libc.kill({host.pid}, 0), ctypes.get_errno())\n"
            "print(sum(n.isdigit() for n in os.listdir('/proc')) < 20)"
        )
        hidden, fallback = _probe_both(code, {"output": "False -1 3\nTrue"}, *pools)
        assert hidden.verdict == "passed", hidden.stdout
        assert fallback.stdout.split()[0] == "True"
        assert host.poll() is None
    finally:
        host.kill()
        host.wait()


def test_no_process_environment_is_readable(pools, monkeypatch):
    """Every /proc/*/environ but the program's own is unreadable (kernel permissions, hook off)."""
    code = (
        "import os\nmine, others = str(os.getpid()), []\n"
        "for n in os.listdir('/proc'):\n"
        "    if n.isdigit() and n != mine:\n"
        "        try:\n            open(f'/proc/{n}/environ', 'rb').read()\n            others.append(n)\n"
        "        except OSError:\n            pass\n"
        "print(others, open('/proc/self/status').read().count('NoNewPrivs:\\t1'))"
    )
    v = run(code, {"output": "[] 1"}, pool=pools[0], audit_hook=False)
    assert v.verdict == "passed", v.stdout


def test_tmp_is_private_and_read_only(pools):
    marker = Path(f"/tmp/pacore_host_tmp_{os.getpid()}")
    marker.write_text("x")
    try:
        code = (f"import os\nprint(os.path.exists({str(marker)!r}))\n"
                "try:\n    open('/tmp/x', 'w')\nexcept OSError as e:\n    print(e.errno)")
        v = run(code, {"output": "False\n30"}, pool=pools[0], audit_hook=False)
        assert v.verdict == "passed", v.stdout
    finally:
        marker.unlink()


# -- choosing the level: require_isolation, the one-time warning -------------------------


def test_require_isolation_refuses_the_fallback(monkeypatch, caplog):
    from megatron_pacore.rewards import isolation as sandbox
    from megatron_pacore.rewards.code import CodeGrader, CodeGraderConfig

    assert CodeGraderConfig().require_isolation is True  # training's default
    with pytest.raises(ValueError, match="contradicts require_isolation"):
        CodeGraderConfig(isolation="unshare")
    monkeypatch.setattr(sandbox, "_probe", (False, "bubblewrap is not installed (apt-get install bubblewrap)"))
    monkeypatch.setattr(sandbox, "_warned", False)
    with pytest.raises(RuntimeError, match="requires namespace isolation.*bubblewrap is not installed"):
        CodeGrader.from_config(CodeGraderConfig(workers=1))
    with caplog.at_level("WARNING", logger="megatron_pacore.rewards.sandbox"):
        assert sandbox.resolve_isolation("auto") == "unshare"
        assert sandbox.resolve_isolation("auto") == "unshare"
    warnings = [r for r in caplog.records if "CODE SANDBOX DEGRADED" in r.getMessage()]
    assert len(warnings) == 1 and "bubblewrap is not installed" in warnings[0].getMessage()
    with pytest.raises(RuntimeError, match="isolation='bwrap' but bubblewrap is not installed"):
        sandbox.resolve_isolation("bwrap")
    with CodeGrader.from_config(CodeGraderConfig(workers=1, require_isolation=False)) as grader:
        result = grader.grade("```python\nprint(1)\n```", [{"output": "1"}])
        assert (result.pass_rate, result.isolation, grader.isolation) == (1.0, "unshare", "unshare")


_OFF_ROOT_PROBE = r'''
import json, os, sys
from megatron_pacore.rewards.code import CodeGrader, run_test
from megatron_pacore.rewards.sandbox import SandboxLimits, SandboxPool
secret, host_pid = sys.argv[1], int(sys.argv[2])
probe = (
    "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    f"try:\n    open({secret!r}).read()\n    readable = True\nexcept OSError:\n    readable = False\n"
    "mine, environs = str(os.getpid()), 0\n"
    "for n in os.listdir('/proc'):\n"
    "    if n.isdigit() and n != mine:\n"
    "        try:\n            open(f'/proc/{n}/environ', 'rb').read()\n            environs += 1\n"
    "        except OSError:\n            pass\n"
    f"print(readable, os.path.exists('/proc/{host_pid}'), libc.kill({host_pid}, 0), ctypes.get_errno(), environs)"
)
pool = SandboxPool(1)
limits = SandboxLimits(cpu_s=2, wall_s=10, memory_mb=512)
v = run_test(probe, {"output": "False False -1 3 0"}, limits, pool, audit_hook=False)
hack = run_test("import builtins\nbuiltins.exec = lambda *a: None\ndef f():\n    return 0",
                {"code": "assert f() == 1"}, limits, pool)
honest = run_test("def f():\n    return 1", {"code": "assert f() == 1"}, limits, pool)
pool.close()
print(json.dumps({"uid": os.getuid(), "level": pool.level, "probe": [v.verdict, v.stdout],
                  "hack": hack.verdict, "honest": honest.verdict}))
'''


def test_off_root_the_grader_runs_in_a_user_namespace(tmp_path):
    """The grader run by an unprivileged user (here `nobody`, dropped to from root with
    setpriv; the suite itself when not root): bubblewrap with a user namespace still hides
    host files and processes, and the harness still holds."""
    import json
    import shutil

    secret = Path(f"/tmp/pacore_off_root_secret_{os.getpid()}")
    secret.write_text("answers")
    secret.chmod(0o644)
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    # The package, copied where `nobody` may read it (the checkout may be below a private
    # directory, e.g. a CI clone in a mktemp -d folder).
    import tempfile

    repo = tempfile.mkdtemp(prefix="pacore_off_root_pkg_")
    os.chmod(repo, 0o755)
    shutil.copytree(Path(__file__).resolve().parents[3] / "megatron_pacore", Path(repo) / "megatron_pacore",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for d, _, files in os.walk(repo):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    try:
        python = shutil.which("python3", path="/usr/bin:/usr/local/bin") if os.geteuid() == 0 else sys.executable
        drop = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] if os.geteuid() == 0 else []
        out = subprocess.run(drop + ["env", "-i", "PATH=/usr/bin:/bin", "HOME=/tmp", f"PYTHONPATH={repo}", python,
                                     "-c", _OFF_ROOT_PROBE, str(secret), str(host.pid)],
                             capture_output=True, text=True, timeout=120, cwd="/tmp")
        assert out.returncode == 0, out.stderr[-2000:]
        row = json.loads(out.stdout.strip().splitlines()[-1])
        assert row["uid"] != 0 and row["level"] == "bwrap"
        assert row["probe"] == ["passed", "False False -1 3 0\n"], row
        assert (row["hack"], row["honest"]) == ("sandbox_violation", "passed")
    finally:
        host.kill()
        host.wait()
        secret.unlink()
        shutil.rmtree(repo, ignore_errors=True)
