"""The code grader: code extraction, output comparison, verdicts of ordinary programs."""
from __future__ import annotations

import pytest

from megatron_pacore.rewards.code import CodeGrader, extract_code, score_code
from megatron_pacore.rewards.code import outputs_match, run_test
from megatron_pacore.rewards.sandbox import SandboxLimits

FAST = SandboxLimits(cpu_s=1, wall_s=2, memory_mb=512, output_bytes=1 << 20)


@pytest.fixture(scope="module")
def grader():
    with CodeGrader(workers=2, limits=FAST) as g:
        yield g


def fenced(code: str, tag: str = "python") -> str:
    return f"```{tag}\n{code}\n```"


def test_extract_code_takes_the_last_python_block():
    response = "Try:\n```python\nprint(1)\n```\nBetter:\n```py\nprint(2)\n```\nDone. ```cpp\nint main(){}\n```"
    assert extract_code(response) == "print(2)\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"


def test_extract_code_ignores_an_unterminated_block_and_plain_text():
    assert extract_code("```python\nprint(1)\n```\nand then\n```python\nprint(2") == "print(1)\n"
    assert extract_code("print(1)") is None


def test_outputs_match_like_a_judge():
    assert outputs_match("1 2\n3   \n\n\n", "1 2\n3")
    assert outputs_match("0.3333333", "0.333333333")
    assert not outputs_match("0.34", "0.333333")
    assert not outputs_match("1\n2", "1 3")
    assert not outputs_match("10", "1")  # integers compare exactly
    assert not outputs_match("", "0")


def test_stdin_stdout_tests_pass_and_fail_per_test(grader):
    code = "a, b = map(int, input().split())\nprint(a + b if a < 100 else a - b)"
    tests = [
        {"input": "1 2\n", "output": "3\n"},
        {"input": "40 2\n", "output": "42"},
        {"input": "100 1\n", "output": "101\n"},
        {"input": "oops\n", "output": "0\n"},
    ]
    result = grader.grade(fenced(code), tests)
    assert result.verdicts == ["passed", "passed", "wrong_answer", "runtime_error"]
    assert result.pass_rate == 0.5
    assert result.details[2].detail == "line 1: got '99', expected '101'"
    assert "ValueError" in result.details[3].detail


def test_assert_tests_in_the_program_namespace(grader):
    code = "def add(a, b):\n    return a + b if a != 7 else 0"
    tests = [{"code": "assert add(1, 2) == 3"}, {"code": "assert add(7, 1) == 8, 'seven'"}, {"code": "add(1)"}]
    result = grader.grade(fenced(code), tests)
    assert result.verdicts == ["passed", "wrong_answer", "runtime_error"]
    assert result.details[1].detail == "assertion failed: seven"
    assert result.pass_rate == pytest.approx(1 / 3)


def test_no_code_block_scores_zero_on_every_test(grader):
    result = grader.grade("I think the answer is print(3).", [{"input": "", "output": "3"}] * 2)
    assert (result.pass_rate, result.verdicts, result.error) == (
        0.0, ["runtime_error", "runtime_error"], "no fenced Python code block in the response")


def test_exit_status_and_normal_exit():
    assert run_test("print(42)\nexit(0)", {"output": "42"}, FAST).verdict == "passed"
    bad = run_test("import sys\nprint(42)\nsys.exit(3)", {"output": "42"}, FAST)
    assert (bad.verdict, bad.detail) == ("runtime_error", "exit status 3")


def test_stdlib_imports_and_deep_recursion_work():
    code = (
        "import sys, heapq, collections, fractions, socket\n"
        "sys.setrecursionlimit(10**6)\n"
        "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
        "print(depth(100000), fractions.Fraction(1, 3) * 3)"
    )
    v = run_test(code, {"output": "100000 1"}, FAST)
    assert v.verdict == "passed", v.detail


def test_files_in_the_work_directory_are_allowed():
    code = "open('scratch.txt', 'w').write('7')\nimport os\nprint(open(os.path.expanduser('~/scratch.txt')).read())"
    assert run_test(code, {"output": "7"}, FAST).verdict == "passed"


def test_grade_many_keeps_the_order_of_responses(grader):
    items = [(fenced(f"print({i})"), [{"output": str(i)}, {"output": "0"}]) for i in range(4)]
    assert [r.pass_rate for r in grader.grade_many(items)] == [1.0, 0.5, 0.5, 0.5]


def test_malformed_tests_are_value_errors(grader):
    with pytest.raises(ValueError, match="test 1 needs 'output'"):
        grader.grade(fenced("print(1)"), [{"output": "1"}, {"expected": "1"}])
    with pytest.raises(ValueError, match="non-empty list"):
        grader.grade(fenced("print(1)"), [])
    with pytest.raises(ValueError, match="cpu_s"):
        SandboxLimits(cpu_s=0)


def test_score_code_module_function():
    result = score_code(fenced("print(input()[::-1])"), [{"input": "abc", "output": "cba"}])
    assert (result.pass_rate, result.verdicts) == (1.0, ["passed"])


def test_a_dead_sandbox_server_is_replaced():
    from megatron_pacore.rewards.sandbox import SandboxPool

    pool = SandboxPool(1)
    try:
        assert run_test("print(1)", {"output": "1"}, FAST, pool).passed
        with pool.sandbox() as box:
            box._proc.kill()
            box._proc.wait()
        assert run_test("print(2)", {"output": "2"}, FAST, pool).passed
    finally:
        pool.close()
