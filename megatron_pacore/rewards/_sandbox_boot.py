"""Sandbox server: supervises test runs. Run as a script: `python -I -S -B _sandbox_boot.py UID`.

Standard library only, and run as a script (never imported by the package), because it is the
first thing the sandbox process executes. Its parts live beside it and are executed into
private namespaces when the server starts, never imported as modules (a program could reach
a module through `sys.modules`): `_sandbox_mounts.py` (layer 1 without bubblewrap),
`_sandbox_audit.py` (layer 4), `_sandbox_procs.py` (deadline and sweep), and the test harness
`_sandbox_harness.py`; this file keeps limits, identity, the verdict channel and the server. It serves test runs for one sandbox uid: a JSON
config per line on stdin (written by `sandbox.py`), a JSON report per line on stdout. The
layers, outermost first:

1. Namespaces. With bubblewrap (`sandbox.py` starts this server inside `bwrap`, level
   "bwrap"): mount, PID, IPC, UTS and network namespaces (plus a user namespace off root), a
   read-only root holding only the Python runtime, a private read-only /tmp, a /proc of the
   sandbox's own PID namespace, no_new_privs. Without it (level "unshare", after a loud
   warning on the host): per run, as root, a new network namespace and a new mount namespace
   in which every mount is remounted read-only except the run's work directory; off root a
   user namespace is tried for the same. A remount that fails is reported, never hidden.
2. Identity (as root): the program runs under a uid/gid of its own (unique per grader slot), so
   RLIMIT_NPROC counts only its processes, the host's files answer with permission errors, and
   every process it leaves behind can be killed by uid, even one that called setsid().
3. Resource limits: RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE (caps stdout, which is a
   file), RLIMIT_NOFILE, RLIMIT_CORE=0, a larger RLIMIT_STACK for deep recursion; a wall-clock
   deadline enforced here with SIGKILL.
4. A `sys.addaudithook` hook: writes outside the work directory, process creation, signals,
   sockets, /proc, and everything that reaches into the interpreter (frames, gc object walks,
   ctypes, tracing, code objects built by hand, marshal) end the program with verdict
   `sandbox_violation`. It gives ordinary Python programs a clear verdict and keeps the
   harness's state (`_sandbox_harness.py`) out of the program's reach; layers 1-3 hold on
   their own (the tests check them with the hook off).
5. The verdict: the harness reports on a pipe, each line prefixed by a per-run nonce that only
   the harness holds; lines without it (a program writing a fake "ok" to every fd) make the
   run a `sandbox_violation`, and no line at all (a program that called os._exit) leaves the
   status empty, which the host grades as a runtime error.

This supervisor is a child subreaper: orphans of the program are re-parented to it, so every
process is reaped and none is left to the host.
"""
import ctypes
import json
import os
import resource
import sys
import time

PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 36, 38, 4
_LIBC = ctypes.CDLL(None, use_errno=True)
_HERE = os.path.dirname(os.path.abspath(__file__))


def load(filename):
    """The names `filename` (beside this file) defines, executed into a private namespace (not
    a module of sys.modules, so a program cannot reach it) while the interpreter is still
    pristine."""
    path = os.path.join(_HERE, filename)
    namespace = {"__name__": filename[:-3], "__file__": path}
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), path, "exec"), namespace)
    return namespace


# The parts, loaded by `serve` before any program runs: {"mounts": ..., "audit": ..., ...}.
_PARTS = {}


def set_limits(limits):
    """Layer 3, in the child before it drops privileges."""
    cpu = max(1, int(limits["cpu_s"] + 0.999))
    memory = limits["memory_mb"] << 20
    for res, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (memory, memory)),
        (resource.RLIMIT_STACK, (min(memory, limits["stack_mb"] << 20),) * 2),
        (resource.RLIMIT_NPROC, (limits["processes"],) * 2),
        (resource.RLIMIT_FSIZE, (limits["output_bytes"],) * 2),
        (resource.RLIMIT_NOFILE, (limits["open_files"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(res, value)



def child(cfg, status_fd, fds, nonce, run):
    """The program's process: limits, identity, hook, then the harness runs the solution
    (and its assert test). `report` is the only writer of verdict lines."""
    write, exit_ = os.write, os._exit

    def report(status, detail=""):
        line = f"{nonce} {status} {detail.encode('utf-8', 'replace').hex()}\n"
        try:
            write(status_fd, line.encode())
        except OSError:
            pass

    try:
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        with open(cfg["source_path"], encoding="utf-8") as f:
            source = f.read()
        test_code = cfg.get("test_code")
        os.chdir(cfg["work_dir"])
        os.environ.clear()
        os.environ.update(cfg["env"])
        set_limits(cfg["limits"])
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(cfg["uid"])
            os.setuid(cfg["uid"])
        os.closerange(3, status_fd)
        os.closerange(status_fd + 1, 4096)
        sys.argv = ["solution.py"]
        sys._getframe = _PARTS["audit"]["_no_frames"]  # namedtuple, enum, warnings, logging cope with ValueError
        del sys._current_frames
        if cfg.get("audit_hook", True):
            _PARTS["audit"]["install_audit_hook"](cfg["work_dir"], report)
    except BaseException as e:  # a setup failure is the grader's, not the program's
        report("setup_error", f"{type(e).__name__}: {e}")
        exit_(0)
    run(source, test_code, report, exit_)



def supervise(cfg):
    """One test run, in a process of its own (forked by `serve`): namespaces, the program's
    process, the wall-clock deadline, the sweep. Returns the report."""
    limits = cfg["limits"]
    fds = [
        os.open(cfg["stdin_path"], os.O_RDONLY),
        os.open(cfg["stdout_path"], os.O_WRONLY | os.O_TRUNC),
        os.open(cfg["stderr_path"], os.O_WRONLY | os.O_TRUNC),
    ]
    if cfg.get("level") == "bwrap":
        network, filesystem = "netns", "bwrap-minimal-root"
    else:
        network, filesystem = _PARTS["mounts"]["isolate"](cfg["work_dir"], cfg.get("hide", ()), cfg.get("expose", ()))
    _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    read_end, write_end = os.pipe()
    nonce = os.urandom(16).hex()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        child(cfg, write_end, fds, nonce, _PARTS["harness"])
        os._exit(0)  # not reached
    os.close(write_end)
    for fd in fds:
        os.close(fd)
    status, usage, timed_out = _PARTS["procs"]["_wait"](pid, limits["wall_s"])
    wall = time.monotonic() - start
    _PARTS["procs"]["sweep"](cfg["uid"], pid)
    verdict, detail = read_verdict(read_end, nonce)
    os.close(read_end)
    if cfg.get("level") == "bwrap":
        level = "bwrap"
    elif network == "netns" and filesystem == "read-only-mounts":
        level = "unshare"
    else:
        level = "audit-hook"
    return {
        "status": verdict,
        "detail": detail,
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "wall_timeout": timed_out,
        "wall_s": round(wall, 4),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 4),
        "max_rss_kb": usage.ru_maxrss,
        "network": network,
        "filesystem": filesystem,
        "isolation": level,
        "audit_hook": cfg.get("audit_hook", True),
    }



def read_verdict(fd, nonce, limit=1 << 20):
    """(status, detail) from the status pipe: the first line that carries `nonce`. Any other
    text on the pipe was written by the program: `sandbox_violation`. No line: (None, "")."""
    os.set_blocking(fd, False)
    data = b""
    while len(data) < limit:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    verdict, forged = None, False
    for line in data.split(b"\n"):
        parts = line.split(b" ")
        if len(parts) == 3 and parts[0] == nonce.encode() and verdict is None:
            try:
                verdict = (parts[1].decode(), bytes.fromhex(parts[2].decode()).decode("utf-8", "replace"))
            except ValueError:
                forged = True
        elif line.strip():
            forged = True
    if forged:
        return "sandbox_violation", "the program wrote to the grader's verdict channel"
    return verdict if verdict is not None else (None, "")


def _exit_builtin(code=None):
    """exit() / quit() as `site` defines them: raise SystemExit."""
    raise SystemExit(code)


def _read_line(fd, buffer):
    while b"\n" not in buffer:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None, b""
        buffer += chunk
    line, _, rest = buffer.partition(b"\n")
    return line, rest


def serve(uid):
    """The server loop: one JSON config per line on fd 0, one JSON report per line on fd 1.

    Starting this interpreter once and forking it per test saves the ~25 ms of CPU that a
    fresh Python costs. Each test is supervised by a new fork, so its namespaces, limits and
    leftovers die with it; fds 0 and 1 are read and written raw, so the program's sys.stdin
    and sys.stdout start with empty buffers."""
    if os.geteuid() == 0 and uid <= 0:
        sys.exit("the sandbox uid must not be root")
    _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # the program cannot ptrace or read /proc of us
    import builtins

    if not hasattr(builtins, "exit"):  # python -S: the `site` module did not add them
        builtins.exit = builtins.quit = _exit_builtin
    for name in ("mounts", "audit", "procs"):
        _PARTS[name] = load(f"_sandbox_{name}.py")
    _PARTS["harness"] = load("_sandbox_harness.py")["make_harness"]()  # `run` of the harness
    buffer = b""
    while True:
        line, buffer = _read_line(0, buffer)
        if line is None:
            return
        cfg = dict(json.loads(line), uid=uid)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                report = supervise(cfg)
            except BaseException as e:
                report = {"status": "setup_error", "detail": f"{type(e).__name__}: {e}"}
            os.write(write_end, (json.dumps(report) + "\n").encode())
            os._exit(0)
        os.close(write_end)
        out = b""
        while True:
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            out += chunk
        os.close(read_end)
        os.waitpid(pid, 0)
        if not out.strip():  # the supervisor died: clean up after it here
            _PARTS["procs"]["sweep"](uid, pid)
            out = json.dumps({"status": None, "detail": "the supervisor died"}).encode() + b"\n"
        else:
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
        os.write(1, out)


if __name__ == "__main__":
    serve(int(sys.argv[1]))

