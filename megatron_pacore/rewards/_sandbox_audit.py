"""Sandbox layer 4: the audit hook that ends a program doing what a test program never needs.

Part of the sandbox server (`_sandbox_boot.py` says what each layer holds): standard library
only; the server executes this file into a private namespace at start (never a module in
`sys.modules`, so a program cannot reach its tables or the hook). Writes outside the work
directory, process creation, signals, sockets, /proc, and everything that reaches into the
interpreter (frames, gc object walks, ctypes, tracing, code objects built by hand) end the
program with verdict `sandbox_violation`. It gives ordinary programs a clear verdict and keeps
the harness's state (`_sandbox_harness.py`) out of their reach; the other layers hold without
it (the tests check them with the hook off).
"""
import os
import sys

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

