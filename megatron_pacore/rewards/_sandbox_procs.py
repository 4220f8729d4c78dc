"""Sandbox process lifetime: the wall-clock deadline of a run and the sweep of what it left.

Part of the sandbox server (`_sandbox_boot.py` says what each layer holds): standard library
only; the server executes this file into a private namespace at start (never a module in
`sys.modules`). The supervisor is a child subreaper, so orphans of the program re-parent to it;
`sweep` kills them all (as root through a helper running as the program's uid, which reaches
even processes that called setsid()) and reaps every one, so none is left to the host.
"""
import os
import select
import signal
import time


def _wait(pid, timeout):
    """(status, rusage, timed_out) of `pid`, killing it at the deadline."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    deadline = time.monotonic() + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, False
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            return status, usage, True
        if pidfd is not None:
            select.select([pidfd], [], [], left)
        else:
            time.sleep(min(left, 0.005))


def _children():
    """Pids whose parent is this process (orphans of the program land here: subreaper)."""
    me, out = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                out.append(int(name))
    return out


def sweep(uid, pgid):
    """Kills and reaps every process the program left. As root, a helper running as the
    program's uid sends kill(-1), which reaches all of them, even ones that left the process
    group; then (any user) the supervisor kills its remaining children, which orphans
    re-parent to, until none is left."""
    if os.geteuid() == 0:
        assert uid > 0, "kill(-1) as root would kill every process of the host"
        for _ in range(2):
            helper = os.fork()
            if helper == 0:
                try:
                    os.setuid(uid)
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(helper, 0)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    for _ in range(10_000):
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        for pid in _children():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.001)

