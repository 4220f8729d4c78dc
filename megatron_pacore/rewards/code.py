"""Code grading: run the last fenced Python block of a response against its tests.

    score_code(response, tests) -> CodeResult(pass_rate, verdicts, ...)

Tests come in two kinds:
- stdin/stdout, as in LiveCodeBench and CodeForces: `{"input": "1 2\\n", "output": "3\\n"}`;
- assert, as in HumanEval: `{"code": "assert add(1, 2) == 3"}`, run after the program in its
  namespace.

Every test runs in its own sandboxed process (`sandbox.py`), several at once. A test ends with
one of VERDICTS; a program over the output-size limit gets `sandbox_violation` (the cap is a
sandbox limit like the others). The reward of a response is its pass rate; a response without
a Python block scores 0 on every test.

Assert tests are run by a harness the program cannot talk out of its verdict
(`_sandbox_harness.py`): its builtins are captured before the program runs, the values that
reach the test's comparisons must be plain data (a rigged `__eq__` fails), and the verdict
travels with a nonce the program never sees. Every verdict records the sandbox's isolation
level (`sandbox.ISOLATION_LEVELS`); `require_isolation` (CodeGraderConfig) refuses to grade
without bubblewrap's namespaces.
"""
from __future__ import annotations

import atexit
import math
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from megatron_pacore.rewards.isolation import bwrap_status
from megatron_pacore.rewards.sandbox import Execution, SandboxLimits, SandboxPool, default_pool

VERDICTS = ("passed", "wrong_answer", "timeout", "memory", "runtime_error", "sandbox_violation")
NO_CODE = "no fenced Python code block in the response"

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}


def extract_code(response: str) -> Optional[str]:
    """The last complete fenced block tagged python (or untagged); None if there is none.
    A block left open at the end (a response cut by max_tokens) is not code we can run."""
    blocks = [m.group(2) for m in _FENCE.finditer(response) if m.group(1).lower() in _PYTHON_TAGS]
    return blocks[-1] if blocks else None


def check_tests(tests: Sequence[dict]) -> None:
    """ValueError naming the first malformed test."""
    if not isinstance(tests, (list, tuple)) or not tests:
        raise ValueError(f"tests must be a non-empty list of dicts, got {tests!r:.100}")
    for i, t in enumerate(tests):
        if not isinstance(t, dict):
            raise ValueError(f"test {i} must be a dict, got {type(t).__name__}")
        if "code" in t:
            if not isinstance(t["code"], str):
                raise ValueError(f"test {i}: 'code' must be a string")
        elif "output" in t:
            if not isinstance(t["output"], str) or not isinstance(t.get("input", ""), str):
                raise ValueError(f"test {i}: 'input' and 'output' must be strings")
        else:
            raise ValueError(f"test {i} needs 'output' (stdin/stdout) or 'code' (assert), got keys {sorted(t)}")


def outputs_match(actual: str, expected: str) -> bool:
    """Judge-style comparison: lines compared with trailing whitespace and trailing blank lines
    ignored; failing that, whitespace-separated tokens equal, where a token of the expected
    output that is a decimal number matches within 1e-6 (absolute or relative)."""
    def lines(text: str) -> list[str]:
        out = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
        while out and not out[-1]:
            out.pop()
        return out

    if lines(actual) == lines(expected):
        return True
    got, want = actual.split(), expected.split()
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if g == w:
            continue
        if not any(c in w for c in ".eE"):
            return False
        try:
            a, b = float(g), float(w)
        except ValueError:
            return False
        if not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6):
            return False
    return True


def _first_difference(actual: str, expected: str) -> str:
    got, want = actual.splitlines(), expected.splitlines()
    for i, (g, w) in enumerate(zip(got, want), 1):
        if g.rstrip() != w.rstrip():
            return f"line {i}: got {g[:80]!r}, expected {w[:80]!r}"
    return f"got {len(got)} lines, expected {len(want)}"


@dataclass(frozen=True)
class TestVerdict:
    """The outcome of one test. `detail` says why (an exception, the limit hit, the first
    differing line); `stdout` is the head of what the program printed."""

    verdict: str
    detail: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    stdout: str = ""
    # The sandbox's isolation level (sandbox.ISOLATION_LEVELS); None when nothing ran.
    isolation: Optional[str] = None

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


def judge(run: Execution, test: dict, limits: SandboxLimits) -> TestVerdict:
    """The verdict of one execution, from the supervisor's report and the program's output.
    Limits are checked before correctness: a program that printed the right answer and then
    spun forever timed out."""
    report, stdout, stderr = run.report, run.stdout, run.stderr
    status, detail, sig = report.get("status"), report.get("detail", ""), report.get("signal")

    def verdict(name: str, why: str = "") -> TestVerdict:
        return TestVerdict(name, why, report.get("wall_s", 0.0), report.get("cpu_s", 0.0), stdout[:2000],
                           report.get("isolation"))

    if status == "sandbox_violation":
        return verdict("sandbox_violation", detail)
    if status == "output_limit" or sig == signal.SIGXFSZ or len(stdout.encode()) > limits.output_bytes - 1:
        return verdict("sandbox_violation", f"output limit of {limits.output_bytes} bytes exceeded")
    if report.get("wall_timeout"):
        return verdict("timeout", f"wall-clock limit of {limits.wall_timeout_s:g}s")
    # SIGXCPU comes at the soft CPU limit; SIGKILL at the hard one (a second later).
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and report.get("cpu_s", 0) >= math.ceil(limits.cpu_s)):
        return verdict("timeout", f"CPU limit of {limits.cpu_s:g}s")
    if status == "memory" or (status != "ok" and "MemoryError" in stderr[-2000:]):
        return verdict("memory", f"memory limit of {limits.memory_mb} MiB")
    if status == "wrong_answer":
        return verdict("wrong_answer", detail)
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return verdict("runtime_error", f"killed by {name}")
    if status != "ok":
        tail = stderr.strip().splitlines()[-1:]
        return verdict("runtime_error", detail or (tail[0][:300] if tail else f"exit status {report.get('exit_code')}"))
    if "code" not in test and not outputs_match(stdout, test["output"]):
        return verdict("wrong_answer", _first_difference(stdout, test["output"]))
    return verdict("passed")


def run_test(source: str, test: dict, limits: SandboxLimits = SandboxLimits(),
             pool: Optional[SandboxPool] = None, audit_hook: bool = True) -> TestVerdict:
    """Runs `source` on one test, `{"input", "output"}` or `{"code"}`, in a sandbox of `pool`
    (default: the process-wide pool). `audit_hook=False` only to test the kernel layers."""
    check_tests([test])
    pool = pool or default_pool()
    if "code" in test:
        run = pool.execute(source, test["code"], "", limits, audit_hook)
    else:
        run = pool.execute(source, None, test.get("input", ""), limits, audit_hook)
    return judge(run, test, limits)


@dataclass
class CodeResult:
    """The grade of one response: `pass_rate` = passed / tests; `verdicts[i]` is one of
    VERDICTS for test i; `error` is set when no test could run (no code block)."""

    pass_rate: float
    verdicts: list[str]
    details: list[TestVerdict] = field(default_factory=list)
    error: Optional[str] = None
    code: Optional[str] = None
    # The sandbox's isolation level (sandbox.ISOLATION_LEVELS).
    isolation: Optional[str] = None


@dataclass(kw_only=True)
class CodeGraderConfig:
    """The code grader's settings (the trainer's code reward is built from one)."""

    # Concurrent sandboxes; None: the CPU count.
    workers: Optional[int] = None
    # Resource limits of every test execution.
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    # Refuse to grade unless bubblewrap's namespaces isolate the programs (on for training:
    # a policy under RL searches every hole). Off, the grader falls back with a warning and
    # records the weaker isolation level in every verdict.
    require_isolation: bool = True
    # "auto" (bwrap, else the fallback), "bwrap" or "unshare" (the fallback, for tests).
    isolation: str = "auto"

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"CodeGraderConfig.workers must be >= 1 or None, got {self.workers}")
        if self.isolation not in ("auto", "bwrap", "unshare"):
            raise ValueError(f"CodeGraderConfig.isolation must be 'auto', 'bwrap' or 'unshare', got {self.isolation!r}")
        if self.require_isolation and self.isolation == "unshare":
            raise ValueError("CodeGraderConfig.isolation='unshare' contradicts require_isolation=True")


class CodeGrader:
    """Runs the tests of many responses on `workers` concurrent sandboxes.

    Args:
        workers: sandboxes at once (default: the CPU count).
        limits: resource limits of every test execution.
        require_isolation: raise unless the sandboxes get bubblewrap's namespaces.
        isolation: "auto", "bwrap" or "unshare" (see sandbox.py).
    """

    def __init__(self, workers: Optional[int] = None, limits: SandboxLimits = SandboxLimits(),
                 require_isolation: bool = False, isolation: str = "auto") -> None:
        if require_isolation:
            ok, why = bwrap_status()
            if not ok or isolation == "unshare":
                raise RuntimeError(
                    f"the code grader requires namespace isolation (require_isolation=True) but "
                    f"{why or 'isolation=unshare was asked for'}; install bubblewrap (scripts/install.sh "
                    f"does, as root) or set require_isolation=False to grade with a weaker sandbox")
        workers = workers or os.cpu_count() or 1
        self.limits = limits
        self.pool = SandboxPool(workers, isolation)
        self.isolation = self.pool.level
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")

    def grade_many(self, items: Sequence[tuple[str, Sequence[dict]]]) -> list[CodeResult]:
        """One CodeResult per (response, tests); all tests of all responses run in parallel."""
        codes = []
        for i, (response, tests) in enumerate(items):
            try:
                check_tests(tests)
            except ValueError as e:
                raise ValueError(f"item {i}: {e}") from None
            codes.append(extract_code(response) if isinstance(response, str) else None)
        futures = [
            None if code is None else
            [self._executor.submit(run_test, code, t, self.limits, self.pool) for t in tests]
            for code, (_, tests) in zip(codes, items)
        ]
        results = []
        for code, (_, tests), futs in zip(codes, items, futures):
            if futs is None:
                none = TestVerdict("runtime_error", NO_CODE)
                results.append(CodeResult(0.0, [none.verdict] * len(tests), [none] * len(tests), error=NO_CODE,
                                          isolation=self.isolation))
                continue
            details = [f.result() for f in futs]
            passed = sum(d.passed for d in details)
            levels = sorted({d.isolation or "?" for d in details})
            results.append(CodeResult(passed / len(details), [d.verdict for d in details], details, code=code,
                                      isolation=",".join(levels)))
        return results

    @classmethod
    def from_config(cls, cfg: CodeGraderConfig) -> "CodeGrader":
        return cls(cfg.workers, cfg.limits, cfg.require_isolation, cfg.isolation)

    def grade(self, response: str, tests: Sequence[dict]) -> CodeResult:
        return self.grade_many([(response, tests)])[0]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.pool.close()

    def __enter__(self) -> "CodeGrader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_default: Optional[CodeGrader] = None
_default_lock = threading.Lock()


def score_code(response: str, tests: Sequence[dict], limits: Optional[SandboxLimits] = None) -> CodeResult:
    """Grades one response on the process-wide grader (or a one-off one for custom limits).
    Like a training reward, it requires namespace isolation (CodeGraderConfig's default)."""
    global _default
    if limits is not None:
        with CodeGrader(limits=limits, require_isolation=True) as grader:
            return grader.grade(response, tests)
    with _default_lock:
        if _default is None:
            _default = CodeGrader.from_config(CodeGraderConfig())
            atexit.register(_default.close)
    return _default.grade(response, tests)
