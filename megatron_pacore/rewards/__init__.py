"""Rewards: math grading with math-verify, sandboxed code grading.

Both graders are used by the evaluation harness (`pacore eval`) and as the trainer's reward:
binary for math (`score_math`), the test pass rate for code (`score_code`).
"""
from megatron_pacore.rewards.code import VERDICTS, CodeGrader, CodeGraderConfig, CodeResult, score_code
from megatron_pacore.rewards.math import MathGrader, MathVerdict, score_math, score_math_batch
from megatron_pacore.rewards.sandbox import SandboxLimits

__all__ = [
    "VERDICTS",
    "CodeGrader",
    "CodeGraderConfig",
    "CodeResult",
    "MathGrader",
    "MathVerdict",
    "SandboxLimits",
    "score_code",
    "score_math",
    "score_math_batch",
]
