"""Evaluation: PaCoRe against self-consistency on a benchmark (`pacore eval`).

    config.py      EvalConfig (its flags are derived by megatron_pacore.config_cli) and compute levels
    benchmarks.py  the problems: math rows (answer), code rows (tests), HumanEval; --limit
    sampling.py    generation with samples shared across methods; the --pool draws
    store.py       every generation recorded as it finishes; replayed on rerun (resume)
    grading.py     every message graded once: math-verify, or the sandboxed code grader
    methods.py     single, majority, pass_at_k, pacore, no_messages scored per problem
    metrics.py     accuracy +- standard error over runs, tokens, message accuracy, emergence
    report.py      report.md, metrics.json, results.jsonl;  plots.py: the PNG figures
    command.py     the job: run_eval(cfg), and run(cfg) for `pacore eval`
"""
