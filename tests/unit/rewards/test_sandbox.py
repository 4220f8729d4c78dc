"""Adversarial programs: each ends within the limits with a verdict, and the host stays
healthy (no process of the sandbox left, no file written, the grader still grades).

Programs marked "kernel layer" use ctypes to go around the in-process audit hook, to check
that the namespaces, the uid and the resource limits hold on their own.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from megatron_pacore.rewards.code import run_test
from megatron_pacore.rewards.sandbox import SandboxLimits, isolation, sandbox_uids

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


def run(code: str, test: dict = ANY, limits: SandboxLimits = LIMITS):
    start = time.monotonic()
    verdict = run_test(code, test, limits)
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


def test_this_machine_gives_the_kernel_layers(guards):
    # As root with namespaces available (this build machine): both kernel guards are on.
    if os.geteuid() == 0:
        assert guards == {"network": "netns", "filesystem": "read-only-mounts"}
    else:
        assert guards["network"] in ("netns", "audit-hook")


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


def test_fork_bomb_through_ctypes_is_contained_and_swept():
    """Kernel layer: RLIMIT_NPROC bounds it, children that leave the session are still
    killed by uid when the wall clock runs out."""
    code = "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    if libc.fork() == 0:\n        libc.setsid()"
    v = run(code)
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


def test_socket_connect_through_ctypes_finds_no_network():
    """Kernel layer: in the empty network namespace even 127.0.0.1 is unreachable."""
    code = (
        "import ctypes, struct\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(2, 1, 0)\n"
        "addr = struct.pack('=H', 2) + struct.pack('!H', 22) + bytes([127, 0, 0, 1]) + bytes(8)\n"
        "print(libc.connect(fd, addr, 16), ctypes.get_errno())"
    )
    v = run(code, {"output": "-1 101"})  # ENETUNREACH
    assert v.verdict == "passed", (v.verdict, v.stdout)


def test_writing_to_the_home_directory_is_a_violation():
    target = Path.home() / f"pacore_sandbox_probe_{os.getpid()}.txt"
    v = run(f"open({str(target)!r}, 'w').write('pwned')")
    assert v.verdict == "sandbox_violation" and str(target) in v.detail
    assert not target.exists()


def test_writing_outside_through_ctypes_hits_a_read_only_filesystem():
    """Kernel layer: /tmp is world-writable on the host, read-only in the sandbox."""
    target = f"/tmp/pacore_sandbox_probe_{os.getpid()}.txt"
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"print(libc.open({target.encode()!r}, 0o101, 0o644), ctypes.get_errno())"
    )
    v = run(code, {"output": "-1 30"})  # EROFS
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
