"""Reward hacks against assert-style tests (DESIGN.md section 3): each scores 0, and honest
solutions, including ones that use the features the harness guards, still score 1."""
from __future__ import annotations

import pytest

from megatron_pacore.rewards.code import CodeGrader
from megatron_pacore.rewards.sandbox import SandboxLimits

FAST = SandboxLimits(cpu_s=2, wall_s=10, memory_mb=512, output_bytes=1 << 20)
ADD_TESTS = [{"code": "assert add(1, 2) == 3"}, {"code": "assert add(-5, 5) == 0"}]


@pytest.fixture(scope="module")
def grader():
    with CodeGrader(workers=2, limits=FAST) as g:
        yield g


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def grade(grader, code, tests=ADD_TESTS):
    return grader.grade(fenced(code), tests)


def test_overriding_builtins_exec_does_not_skip_the_tests(grader):
    hack = "import builtins\nbuiltins.exec = lambda *a, **k: None\ndef add(a, b):\n    return 0"
    result = grade(grader, hack)
    assert result.pass_rate == 0.0
    assert result.verdicts == ["sandbox_violation", "sandbox_violation"]
    assert result.details[0].detail == "builtins.exec was replaced"


def test_overriding_compile_or_assertion_machinery_scores_zero(grader):
    for hack in ("import builtins\nbuiltins.compile = lambda *a, **k: compile('pass', 'x', 'exec')\n"
                 "def add(a, b):\n    return 0",
                 "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"
                 "def add(a, b):\n    return 0"):
        assert grade(grader, hack).pass_rate == 0.0, hack


def test_fake_ok_status_on_inherited_fds_then_exit_scores_zero(grader):
    hack = (
        "import os\n"
        "def add(a, b):\n    return 0\n"
        "for fd in range(3, 1024):\n"
        "    for line in (b'{\"status\": \"ok\", \"detail\": \"\"}\\n', b'0123456789abcdef ok \\n'):\n"
        "        try:\n            os.write(fd, line)\n        except OSError:\n            pass\n"
        "os._exit(0)"
    )
    result = grade(grader, hack)
    assert result.pass_rate == 0.0
    assert result.details[0].verdict == "sandbox_violation"
    assert result.details[0].detail == "the program wrote to the grader's verdict channel"


def test_exiting_early_without_a_verdict_scores_zero(grader):
    result = grade(grader, "import os\ndef add(a, b):\n    os._exit(0)")
    assert result.verdicts == ["runtime_error", "runtime_error"]


def test_always_equal_object_fails(grader):
    hack = "class Anything:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Anything()"
    result = grade(grader, hack)
    assert result.verdicts == ["wrong_answer", "wrong_answer"]
    assert "type 'Anything'" in result.details[0].detail


def test_int_subclass_that_equals_everything_fails(grader):
    hack = ("class Int(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
            "def add(a, b):\n    return Int(7)")
    assert grade(grader, hack).verdicts == ["wrong_answer", "wrong_answer"]


def test_rigged_values_nested_or_through_arithmetic_and_truth_fail(grader):
    rigged = ("class R:\n    def __eq__(self, o): return True\n    def __sub__(self, o): return 0.0\n"
              "    def __rsub__(self, o): return 0.0\n    def __bool__(self): return True\n"
              "    def __lt__(self, o): return True\n    def __len__(self): return 3\n")
    tests = [{"code": "assert add(1, 2) == [3]"},
             {"code": "assert abs(add(1, 2) - 3) < 1e-9"},
             {"code": "assert add(1, 2)"},
             {"code": "assert len(add(1, 2)) == 3"},
             {"code": "assert sorted(add(1, 2)) == [1, 2, 3]"},
             {"code": "assert not (add(1, 2) != 3)"}]
    result = grade(grader, rigged + "def add(a, b):\n    return [R()] if a < 0 else R()", tests)
    assert result.verdicts == ["wrong_answer"] * 6, result.details


def test_patching_a_trusted_module_is_a_violation(grader):
    hack = "import math\nmath.isclose = lambda *a, **k: True\ndef add(a, b):\n    return 0"
    result = grade(grader, hack, [{"code": "import math\nassert math.isclose(add(1, 2), 3.0)"}])
    assert result.verdicts == ["sandbox_violation"]
    assert result.details[0].detail == "math.isclose was replaced"


def test_a_stand_in_module_of_the_solution_is_not_what_the_test_calls(grader):
    hack = ("class FakeMath:\n    @staticmethod\n    def isclose(*a, **k):\n        return True\n"
            "math = FakeMath()\ndef add(a, b):\n    return 0")
    result = grade(grader, hack, [{"code": "assert math.isclose(add(1, 2), 3.0)"}])
    assert result.verdicts == ["wrong_answer"]
    honest = grade(grader, "import math\nstring = 'abc'\ndef add(a, b):\n    return a + b",
                   [{"code": "assert math.isclose(add(1, 2), 3.0) and string == 'abc'"}])
    assert honest.verdicts == ["passed"]


def test_reaching_for_frames_or_the_interpreter_is_a_violation(grader):
    tests = [{"code": "assert add(1, 2) == 3"}]
    for hack in ("import gc\ngc.get_objects()",
                 "import ctypes\nctypes.CDLL(None)",
                 "def g():\n    yield 1\ng().gi_frame",
                 "import sys\nsys.settrace(lambda *a: None)",
                 "try:\n    raise ValueError\nexcept ValueError as e:\n    e.__traceback__.tb_frame"):
        result = grade(grader, hack + "\ndef add(a, b):\n    return a + b", tests)
        assert result.verdicts == ["sandbox_violation"], (hack, result.details)
    frames = grade(grader, "import sys\nsys._getframe(1)\ndef add(a, b):\n    return a + b", tests)
    assert frames.verdicts == ["runtime_error"] and "frames are not available" in frames.details[0].detail


HONEST = {
    "plain functions": ("def add(a, b):\n    return a + b", ADD_TESTS),
    "humaneval check(candidate)": (
        "def add(a, b):\n    return a + b",
        [{"code": "def check(candidate):\n    for i in range(5):\n        assert candidate(i, i) == 2 * i\n"
                  "    assert all(candidate(x, 1) > x for x in [1, 2, 3])\ncheck(add)"}]),
    "floats, sets, dicts, tuples, None": (
        "import math\ndef f(x):\n    return {'r': math.sqrt(x), 's': {1, 2}, 't': (x, [x])}\n"
        "def g():\n    return None",
        [{"code": "import math\nr = f(4.0)\nassert math.isclose(r['r'], 2.0) and abs(r['r'] - 2) < 1e-9\n"
                  "assert r['s'] == {2, 1} and r['t'] == (4.0, [4.0])\nassert g() is None\n"
                  "assert isinstance(r, dict) and type(r['t']) == tuple"}]),
    "solution callables given to builtins": (
        "def sq(x):\n    return x * x",
        [{"code": "assert list(map(sq, [1, 2, 3])) == [1, 4, 9]\nassert sorted([3, -1, 2], key=sq) == [-1, 2, 3]\n"
                  "assert max(range(-5, 3), key=sq) == -5\nassert ''.join(str(sq(i)) for i in range(3)) == '014'"}]),
    "a class with methods (LeetCode style)": (
        "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
        "        for i, n in enumerate(nums):\n            if target - n in seen:\n"
        "                return [seen[target - n], i]\n            seen[n] = i",
        [{"code": "assert Solution().twoSum([2, 7, 11, 15], 9) == [0, 1]"}]),
    "namedtuple, exit, deep recursion in a thread": (
        "import sys, threading\nfrom collections import namedtuple\nP = namedtuple('P', 'x y')\n"
        "sys.setrecursionlimit(10**6)\nthreading.stack_size(1 << 26)\n"
        "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
        "out = []\nt = threading.Thread(target=lambda: out.append(depth(20000)))\nt.start()\nt.join()\n"
        "def add(a, b):\n    return P(a, b).x + P(a, b).y + out[0] - 20000\n",
        ADD_TESTS),
    "import inside the test, from-import": (
        "def add(a, b):\n    return a + b",
        [{"code": "from math import isclose\nimport operator\nassert isclose(add(0.1, 0.2), 0.3)\n"
                  "assert operator.eq(add(1, 1), 2)"}]),
}


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_solutions_still_pass(grader, name):
    code, tests = HONEST[name]
    result = grade(grader, code, tests)
    assert result.pass_rate == 1.0, (name, result.details)


def test_honest_wrong_answers_still_fail_plainly(grader):
    result = grade(grader, "def add(a, b):\n    return a + b if a > 0 else 99")
    assert result.verdicts == ["passed", "wrong_answer"]
    assert result.details[1].detail == "assertion failed: "


def test_main_module_is_the_solution_not_the_harness(grader):
    """`import __main__` once reached the sandbox server's own globals (its functions, the
    hook's helpers); now it is the solution's module."""
    code = ("import __main__\ndef add(a, b):\n    return a + b\n"
            "names = sorted(k for k in vars(__main__) if not k.startswith('__'))\n"
            "print(names, __main__.add is add)")
    result = grader.grade(fenced(code), [{"output": "['add'] True"}])
    assert result.pass_rate == 1.0, result.details


def test_verdicts_record_the_isolation_level(grader):
    result = grade(grader, "def add(a, b):\n    return a + b")
    assert result.isolation == grader.isolation == "bwrap"
    assert {d.isolation for d in result.details} == {"bwrap"}
