"""Sandbox server: supervises test runs. Run as a script: `python -I -S -B _sandbox_boot.py UID`.

Standard library only, and run as a script (never imported by the package), because it is the
first thing the sandbox process executes. It serves test runs for one sandbox uid: a JSON
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
import select
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 36, 38
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
_LIBC = ctypes.CDLL(None, use_errno=True)


def _mountinfo():
    """(mount point, per-mount option flags) of this mount namespace, parents first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            flags = 0
            for opt in fields[5].split(","):
                flags |= _MOUNT_FLAGS.get(opt, 0)
            out.append((point, flags))
    return out


def _mount(source, target, flags):
    src = source.encode() if source else None
    if _LIBC.mount(src, target.encode(), None, flags, None) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}")


def _hide(hide, expose):
    """Covers each directory of `hide` (the host's home) with an empty tmpfs, then binds back
    the directories of `expose` that lie under it (the interpreter's own prefix, when Python
    is installed in the home directory), so the program can import the standard library but
    sees nothing else of the home."""
    for hidden in hide:
        if hidden == "/" or not os.path.isdir(hidden):
            continue
        keep = [(d, os.open(d, os.O_PATH | os.O_DIRECTORY)) for d in expose
                if d.startswith(hidden.rstrip("/") + "/") and os.path.isdir(d)]
        if _LIBC.mount(b"tmpfs", hidden.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755,size=1m") != 0:
            raise OSError(ctypes.get_errno(), f"mount tmpfs on {hidden}")
        for d, fd in keep:
            os.makedirs(d, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", d, MS_BIND | MS_REC)
            os.close(fd)


def isolate(work_dir, hide=(), expose=()):
    """Layer 1 without bubblewrap. Returns (network, filesystem) guard names for the report:
    filesystem is "read-only-mounts" only when every remount succeeded."""
    as_root = os.geteuid() == 0
    flags = CLONE_NEWNET | CLONE_NEWNS if as_root else CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS
    if _LIBC.unshare(flags) != 0:
        return "audit-hook", "audit-hook"
    try:
        _mount(None, "/", MS_REC | MS_PRIVATE)  # nothing below propagates to the host
        _hide(hide, expose)
        _mount(work_dir, work_dir, MS_BIND)  # the work dir becomes its own writable mount
        failed = 0
        for point, keep in _mountinfo():
            if point != work_dir:
                try:
                    _mount(None, point, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
                except OSError:
                    if point == "/":
                        raise
                    failed += 1
        return "netns", "read-only-mounts" if not failed else f"read-only-mounts-except-{failed}"
    except OSError:
        return "netns", "audit-hook"


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


_BLOCKED_EVENTS = frozenset({
    "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__",
    "function.__new__", "sys.addaudithook",
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
    "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "pty.spawn",
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo",
})
# Events that modify a path: the indices of their path arguments.
_PATH_EVENTS = {
    "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
    "os.chmod": (0,), "os.chown": (0,), "os.link": (1,), "os.symlink": (1,),
    "os.truncate": (0,), "os.utime": (0,), "shutil.rmtree": (0,), "shutil.copyfile": (1,),
    "os.mkfifo": (0,), "os.mknod": (0,),
}
# Attribute reads that lead to frames (audited as object.__getattr__).
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_globals", "f_locals"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_audit_hook(work_dir, report):
    """Layer 4: `report(status, detail)` then exit on anything a test program has no business
    doing. The hook exits with os._exit, so the program cannot catch it."""
    root = os.path.realpath(work_dir)
    realpath, fspath, fsdecode, _exit = os.path.realpath, os.fspath, os.fsdecode, os._exit

    def resolve(path):
        if isinstance(path, int):
            return None
        p = fspath(path)
        return realpath(fsdecode(p) if isinstance(p, bytes) else p)

    def outside(path):
        full = resolve(path)
        return full is not None and full != "/dev/null" and full != root and not full.startswith(root + "/")

    def violation(what):
        report("sandbox_violation", what[:300])
        _exit(0)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            full = resolve(path)
            if full is None:
                return
            if full == "/proc" or full.startswith("/proc/"):
                violation(f"open of {full}")
            writing = (flags or 0) & _WRITE_FLAGS or (mode is not None and any(c in mode for c in "wax+"))
            if writing and outside(path):
                violation(f"write outside the sandbox: {full}")
        elif event in _BLOCKED_EVENTS or event.startswith("ctypes."):
            violation(f"{event}")
        elif event == "object.__getattr__" and len(args) > 1 and args[1] in _FRAME_ATTRS:
            violation(f"frame access ({args[1]})")
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args) and outside(args[i]):
                    violation(f"{event} outside the sandbox: {args[i]!r}")

    sys.addaudithook(hook)


def _no_frames(*args):
    raise ValueError("frames are not available in the sandbox")


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
        sys._getframe = _no_frames  # namedtuple, enum, warnings, logging cope with ValueError
        del sys._current_frames
        if cfg.get("audit_hook", True):
            install_audit_hook(cfg["work_dir"], report)
    except BaseException as e:  # a setup failure is the grader's, not the program's
        report("setup_error", f"{type(e).__name__}: {e}")
        exit_(0)
    run(source, test_code, report, exit_)


def _flush():
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass


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
        network, filesystem = isolate(cfg["work_dir"], cfg.get("hide", ()), cfg.get("expose", ()))
    _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    read_end, write_end = os.pipe()
    nonce = os.urandom(16).hex()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        child(cfg, write_end, fds, nonce, _HARNESS[0])
        os._exit(0)  # not reached
    os.close(write_end)
    for fd in fds:
        os.close(fd)
    status, usage, timed_out = _wait(pid, limits["wall_s"])
    wall = time.monotonic() - start
    sweep(cfg["uid"], pid)
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


PR_SET_DUMPABLE = 4
_HARNESS = []


def _exit_builtin(code=None):
    """exit() / quit() as `site` defines them: raise SystemExit."""
    raise SystemExit(code)


def load_harness():
    """`run` of `_sandbox_harness.py`, executed into a private namespace (not a module of
    sys.modules, so a program cannot reach it) while the interpreter is still pristine."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_harness.py")
    namespace = {"__name__": "_sandbox_harness", "__file__": path}
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), path, "exec"), namespace)
    return namespace["make_harness"]()


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
    _HARNESS.append(load_harness())
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
            sweep(uid, pid)
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
