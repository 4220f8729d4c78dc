"""Sandbox layer 1 without bubblewrap: per-run network and mount namespaces, read-only mounts.

Part of the sandbox server (`_sandbox_boot.py` says what each layer holds): standard library
only; the server executes this file into a private namespace at start (never a module in
`sys.modules`, so a program cannot reach it). As root, `isolate` unshares a network and a
mount namespace, hides the host's home behind an empty tmpfs (binding back the interpreter's
prefix when Python lives there), makes the run's work directory its own writable mount and
remounts every other mount read-only; off root a user namespace is tried for the same. A
remount that fails is reported in the guard name, never hidden.
"""
import ctypes
import os

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
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

