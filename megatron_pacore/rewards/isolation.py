"""Which outer isolation a code sandbox gets, and the bubblewrap command that gives it.

Levels (ISOLATION_LEVELS; `sandbox.py`'s docstring says what each holds): "bwrap" when
bubblewrap starts on this machine, else "unshare" after a loud one-time warning ("auto"), and
"audit-hook" when not even that made namespaces (reported per run by the server).
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

_BOOT = str(Path(__file__).with_name("_sandbox_boot.py"))
# The sandbox server and the parts it loads from beside itself, bound into /pacore under bwrap.
_SERVER_FILES = ("_sandbox_boot.py", "_sandbox_mounts.py", "_sandbox_audit.py", "_sandbox_procs.py",
                 "_sandbox_harness.py")
ISOLATION_LEVELS = ("bwrap", "unshare", "audit-hook")
# The only variables a program sees (plus HOME and TMPDIR, its work directory).
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8",
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
log = logging.getLogger("megatron_pacore.rewards.sandbox")


def _base_python() -> str:
    """The interpreter without the virtualenv: inside bwrap only its standard library exists."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _ancestors(path: str) -> list[str]:
    """`path` and its parents, without "/"."""
    out = []
    while path not in ("/", ""):
        out.append(path)
        path = os.path.dirname(path)
    return out


def _runtime_binds() -> list[str]:
    """bwrap arguments that bind the Python runtime read-only, and nothing else of the host:
    the base interpreter, its standard library (site-packages masked), libpython if shared,
    and the system library directories (symlinks such as /lib -> usr/lib recreated)."""
    import sysconfig

    args: list[str] = []
    for d in ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/lib32", "/usr/lib32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    exe = _base_python()
    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    # Parents of the runtime keep the host's mode when bwrap makes them (/root is 0700 when
    # Python lives in root's pyenv): make them traversable first.
    parents = {os.path.dirname(p) for p in (exe, stdlib)}
    for parent in sorted({a for p in parents for a in _ancestors(p)}):
        args += ["--perms", "0755", "--dir", parent]
    args += ["--ro-bind", exe, exe, "--ro-bind", stdlib, stdlib]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        lib = os.path.join(sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("LDLIBRARY") or "")
        if os.path.isfile(lib):
            lib = os.path.realpath(lib)
            args += ["--ro-bind", lib, lib]
    site = os.path.join(stdlib, "site-packages")
    if os.path.isdir(site):
        args += ["--tmpfs", site, "--remount-ro", site]
    return args


def bwrap_command(run_root: str, uid: int) -> list[str]:
    """The argv that starts a sandbox server inside bubblewrap (see the module docstring)."""
    as_root = os.geteuid() == 0
    args = ["bwrap", "--die-with-parent", "--as-pid-1", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try"]
    if as_root:  # no user namespace: the server setuid()s each program to its own uid
        args += ["--cap-drop", "ALL"] + [a for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_SYS_RESOURCE")
                                         for a in ("--cap-add", cap)]
    else:
        args += ["--unshare-user"]
    args += _runtime_binds()
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
             *(a for name in _SERVER_FILES for a in ("--ro-bind", str(Path(_BOOT).with_name(name)), f"/pacore/{name}")),
             "--bind", run_root, run_root, "--remount-ro", "/tmp", "--remount-ro", "/", "--chdir", "/", "--clearenv"]
    for key, value in _ENV.items():
        args += ["--setenv", key, value]
    return args + [_base_python(), "-I", "-S", "-B", "/pacore/_sandbox_boot.py", str(uid)]


_probe_lock = threading.Lock()
_probe: Optional[tuple[bool, str]] = None
_warned = False


def bwrap_status() -> tuple[bool, str]:
    """(usable, why not): whether a bwrap sandbox starts on this machine (probed once)."""
    global _probe
    with _probe_lock:
        if _probe is None:
            if shutil.which("bwrap") is None:
                _probe = (False, "bubblewrap is not installed (apt-get install bubblewrap)")
            else:
                root = tempfile.mkdtemp(prefix="pacore-sandbox-probe-")
                try:
                    argv = bwrap_command(root, 0)[:-3] + ["-c", "import os; os.listdir('/proc')"]
                    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
                    err = done.stderr.decode("utf-8", "replace").strip()
                    _probe = (True, "") if done.returncode == 0 else (False, f"bwrap failed: {err[-300:]}")
                except (OSError, subprocess.SubprocessError) as e:
                    _probe = (False, f"bwrap failed: {e}")
                finally:
                    shutil.rmtree(root, ignore_errors=True)
        return _probe


def resolve_isolation(requested: str = "auto") -> str:
    """The outer isolation mechanism for `requested` ("auto", "bwrap" or "unshare"). "auto"
    without a working bwrap falls back to "unshare" after a loud warning, once per process."""
    global _warned
    if requested not in ("auto", "bwrap", "unshare"):
        raise ValueError(f"isolation must be 'auto', 'bwrap' or 'unshare', got {requested!r}")
    if requested == "unshare":
        return "unshare"
    ok, why = bwrap_status()
    if ok:
        return "bwrap"
    if requested == "bwrap":
        raise RuntimeError(f"isolation='bwrap' but {why}")
    with _probe_lock:
        if not _warned:
            _warned = True
            log.warning(
                "\n" + "!" * 78 + "\nCODE SANDBOX DEGRADED: %s.\nPrograms run with the fallback "
                "isolation (per-run unshare as root, or only an audit hook off root): host files "
                "stay readable, other processes stay visible. Every verdict records its isolation "
                "level. Install bubblewrap (scripts/install.sh does, as root).\n" + "!" * 78, why)
    return "unshare"


