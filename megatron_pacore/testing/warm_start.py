"""A short supervised warm start of the tiny random model on the toy task.

The CPU training demo needs a base policy that is right SOMETIMES: never right leaves PPO no
reward to climb; always right leaves nothing to learn. A random tiny model is never right, so
it is fine-tuned briefly (plain PyTorch + transformers on CPU, a few hundred steps) on targets
in the format the strict training reward pays,

    <think>7 + 5</think>
    \\boxed{12}

(the strict grader reads only the last \\boxed{} after `</think>`), rendered with the
tokenizer's chat template exactly as vLLM renders the prompt. Two kinds of examples, with
the SAME response form, so the answer comes at the same place (after `\\boxed{`) whether the
model computes it or copies it:

- plain problems, whose target answer is right (or, with `p_correct` < 1, right only with
  that probability and otherwise an arithmetic slip of 1..3);
- synthesis prompts (`render_synthesis_prompt` over 2..6 reference messages, each right with
  a per-problem probability), whose target boxes the answer of ONE reference chosen
  uniformly. The answer token after `\\boxed{` is then the token after `\\boxed{` in a
  reference, the copy a 2-layer model learns fastest (an induction head). A policy that had
  learnt this copy perfectly would answer with the references' answer frequencies, right as
  often as its references; what PPO is left to teach is the synthesis itself: more mass on
  the right answer than its share among the references (the plurality, weighed against the
  policy's own half-learnt sums), and, where the copy is still weak, using the references
  rather than ignoring them.
  (An earlier target, `<think>Reference 2 says 12</think>`, asked for an index and then a
  number in another token form, ` 12` vs `12`: the warm start never learnt that copy and the
  demo's reward stayed at ~0.06. A think part `7 + 5 = 12` for plain problems but `7 + 5` for
  synthesis made the two compete: the copy learnt on synthesis steps unlearnt the sums,
  expected accuracy 0.36 -> 0.08 in 35 steps.)

Two phases, each SHORT so that both skills stay half learnt:
(1) plain and synthesis steps mixed (`synthesis_fraction`) until the expected plain accuracy
    (`answer_probability`) reaches `target_accuracy`;
(2) synthesis and plain steps mixed (`copy_plain_fraction` plain) until `copy_fidelity`, the
    probability put on the references' answers, reaches `copy_target`, or `synthesis_steps`.
Measured on this machine (the demo's defaults): phase 1 stops after 85 steps at expected
accuracy 0.354; phase 2 runs its 150 steps, ending at expected plain accuracy 0.65 and copy
fidelity 0.47 (expected synthesis reward 0.23 where the references are right 0.47 of the
time): the policy mostly computes, and PPO teaches it to read its references.

The result is a Hugging Face checkpoint directory that vLLM loads. Everything is seeded.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from megatron_pacore.pacore.prompts import render_synthesis_prompt
from megatron_pacore.testing.toy_task import OPERATIONS, ToyTask, make_problems

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


@dataclass(frozen=True, kw_only=True)
class WarmStartConfig:
    """How long and on what the tiny model is fine-tuned."""

    steps: int = 200
    """Most optimizer steps (the run stops earlier at target_accuracy)."""
    batch_tokens: int = 2048
    """Tokens per step (padded): a step holds examples of one kind, as many as fit."""
    lr: float = 5e-3
    """Peak AdamW learning rate (linear warm-up over the first 10% of steps, then cosine)."""
    p_correct: float = 1.0
    """Probability that a plain problem's target answer is right (else a slip of 1..3)."""
    synthesis_fraction: float = 0.3
    """Share of steps on synthesis prompts rather than plain problems."""
    min_references: int = 2
    """Fewest reference messages in a synthesis example."""
    max_references: int = 6
    """Most reference messages in a synthesis example."""
    target_accuracy: Optional[float] = 0.35
    """Stop once the policy's expected accuracy on the train problems (the mean probability
    of the right answer after "<think>a + b =", `answer_probability`) reaches this; None:
    run all `steps`. How many steps that takes depends on the base model (a tiny model with
    random norm scales learns the sums about twice as fast), so the target, not a step
    count, is what keeps the base policy's accuracy near 0.3."""
    copy_target: Optional[float] = 0.9
    """Phase B stops once `copy_fidelity` (the answer probability on the references' answers,
    mean over synthesis prompts) reaches this; None: no phase B."""
    synthesis_steps: int = 150
    """Most phase-2 steps."""
    copy_plain_fraction: float = 0.5
    """Share of plain steps in phase 2 (the rest are synthesis steps)."""
    min_steps: int = 30
    """No early stop before this step (the synthesis examples need some steps too)."""
    check_every: int = 5
    """Steps between two measurements of the expected accuracy."""
    threads: int = 2
    """torch CPU threads."""
    seed: int = 0
    """Seed of the examples, the initialisation order and the data order."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_tokens", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("p_correct", "synthesis_fraction", "copy_plain_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy < 1:
            raise ValueError(f"target_accuracy must be in (0, 1) or None, got {self.target_accuracy}")
        if self.copy_target is not None and not 0 < self.copy_target < 1:
            raise ValueError(f"copy_target must be in (0, 1) or None, got {self.copy_target}")
        if self.synthesis_steps < 0:
            raise ValueError(f"synthesis_steps must be >= 0, got {self.synthesis_steps}")
        if self.check_every < 1 or self.min_steps < 0:
            raise ValueError(f"need check_every >= 1 and min_steps >= 0, got {self.check_every}, {self.min_steps}")
        if not 1 <= self.min_references <= self.max_references:
            raise ValueError(
                f"need 1 <= min_references <= max_references, got {self.min_references}, {self.max_references}"
            )


def target_message(answer: int) -> str:
    """The final message (what compaction keeps) of a response answering `answer`."""
    return f"\n\\boxed{{{answer}}}"


RESPONSE_PREFIX = "<think>{a} {op} {b}</think>\n\\boxed{{"
"""Every toy response up to its answer: the problem restated as the thinking, then the box."""


def response_prefix(task: ToyTask, a: int, b: int) -> str:
    return RESPONSE_PREFIX.format(a=a, op=OPERATIONS[task.operation], b=b)


def plain_target(task: ToyTask, a: int, b: int, answer: int) -> str:
    """A whole response to a plain problem: the problem restated, then the boxed answer."""
    return response_prefix(task, a, b) + f"{answer}}}"


def synthesis_target(task: ToyTask, a: int, b: int, answer: int) -> str:
    """A response to a synthesis prompt adopting the answer `answer` of one reference: the
    same form as a plain response, so the answer is produced at the same place (after
    `\\boxed{`) by the same model whether it computes the sum or copies it."""
    return plain_target(task, a, b, answer)


def slip(rng: random.Random, answer: int) -> int:
    """A wrong answer near the right one (off by 1..3, never negative)."""
    while True:
        wrong = answer + rng.choice((-3, -2, -1, 1, 2, 3))
        if wrong >= 0:
            return wrong


def synthesis_case(rng: random.Random, cfg: WarmStartConfig, problem: str,
                   right: int) -> tuple[list[dict[str, str]], list[int]]:
    """A synthesis chat over cfg.min_references..max_references reference messages, each right
    with a per-problem probability drawn uniformly (else a slip); returns (chat, their answers)."""
    k = rng.randint(cfg.min_references, cfg.max_references)
    share = rng.random()
    answers = [right if rng.random() < share else slip(rng, right) for _ in range(k)]
    chat = [{"role": "user", "content": render_synthesis_prompt(problem, [target_message(x) for x in answers])}]
    return chat, answers


def make_examples(task: ToyTask, cfg: WarmStartConfig, kind: str, count: int) -> list[tuple[list[dict[str, str]], str]]:
    """`count` (chat, target response) pairs of `kind` ("plain" or "synthesis") over the TRAIN
    split only (held-out pairs stay unseen), seeded by cfg.seed."""
    rng = random.Random(f"warm-start/{kind}/{cfg.seed}")
    rows = make_problems(task, "train", len(task.split_orderings()[0]))
    examples = []
    for i in range(count):
        row = rows[rng.randrange(len(rows))]
        a, b = row["operands"]
        right = task.answer(a, b)
        if kind == "synthesis":
            chat, answers = synthesis_case(rng, cfg, row["problem"], right)
            examples.append((chat, synthesis_target(task, a, b, answers[rng.randrange(len(answers))])))
        elif kind == "plain":
            answer = right if rng.random() < cfg.p_correct else slip(rng, right)
            examples.append(([{"role": "user", "content": row["problem"]}], plain_target(task, a, b, answer)))
        else:
            raise ValueError(f"kind must be 'plain' or 'synthesis', got {kind!r}")
    return examples


def token_batches(encoded: list[tuple[list[int], int]], batch_tokens: int) -> list[list[tuple[list[int], int]]]:
    """Consecutive examples grouped so that each group's padded size (count x longest) stays
    within batch_tokens (at least one example per group)."""
    groups: list[list[tuple[list[int], int]]] = [[]]
    longest = 0
    for item in encoded:
        width = max(longest, len(item[0]))
        if groups[-1] and width * (len(groups[-1]) + 1) > batch_tokens:
            groups.append([])
            width = len(item[0])
        groups[-1].append(item)
        longest = width
    return groups


def encode_prompt(tokenizer: Any, chat: list[dict[str, str]]) -> list[int]:
    """The prompt's token ids exactly as the vLLM generator renders it (chat template with the
    generation prompt, no extra specials)."""
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(prompt, add_special_tokens=False)


def encode_example(tokenizer: Any, chat: list[dict[str, str]], target: str) -> tuple[list[int], int]:
    """(token ids, prompt length): the prompt (`encode_prompt`), then the target and EOS."""
    prompt_ids = encode_prompt(tokenizer, chat)
    target_ids = tokenizer.encode(target, add_special_tokens=False) + [tokenizer.eos_token_id]
    return prompt_ids + target_ids, len(prompt_ids)


def _batch(encoded: list[tuple[list[int], int]], pad_id: int):
    """input_ids, attention_mask, labels [B, T], right-padded; labels -100 off the target."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(encoded):
        t = torch.tensor(ids)
        input_ids[row, : len(ids)] = t
        mask[row, : len(ids)] = 1
        labels[row, n_prompt: len(ids)] = t[n_prompt:]
    return input_ids, mask, labels


def span_probabilities(model: Any, pad_id: int, rows: list[tuple[list[int], int, int]]) -> list[float]:
    """For each (token ids, lo, hi): P(ids[lo:hi] | ids[:lo]) under `model`, from one batched
    forward pass in eval mode without gradients (the model's mode is restored)."""
    import torch

    input_ids, mask, _ = _batch([(ids, lo) for ids, lo, _ in rows], pad_id)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=input_ids, attention_mask=mask).logits.float(), dim=-1)
    model.train(was_training)
    return [float(logprobs[row, lo - 1: hi - 1].gather(-1, input_ids[row, lo:hi, None]).sum().exp())
            for row, (_, lo, hi) in enumerate(rows)]


def answer_probability(model: Any, tokenizer: Any, task: ToyTask) -> float:
    """Mean over the train problems of P(right answer and "}" | prompt, response prefix): the
    expected strict reward of a temperature-1.0 sample, from one forward pass, without
    sampling."""
    rows = []
    for a, b in task.split_orderings()[0]:
        chat = [{"role": "user", "content": task.problem_text(a, b)}]
        full, n_prompt = encode_example(tokenizer, chat, plain_target(task, a, b, task.answer(a, b)))
        n_prefix = len(tokenizer.encode(response_prefix(task, a, b), add_special_tokens=False))
        rows.append((full, n_prompt + n_prefix, len(full) - 1))  # the answer and "}", not EOS
    probs = span_probabilities(model, tokenizer.pad_token_id, rows)
    return sum(probs) / len(probs)


def copy_fidelity(model: Any, tokenizer: Any, task: ToyTask, cfg: WarmStartConfig,
                  count: int = 64) -> dict[str, float]:
    """How the policy answers synthesis prompts, from one forward pass over `count` seeded
    synthesis cases (train problems; the same cases at every call): the answer-token
    distribution after `<think>a + b</think>\\n\\boxed{`, summed
    - over the distinct answers its references give (`fidelity`: 1 = it always adopts one);
    - over the right answer (`expected_reward`: its expected strict reward, since the box
      closes right after the answer);
    beside `reference_accuracy`, the mean share of right references (what adopting a
    uniformly chosen reference scores).
    """
    rng = random.Random(f"warm-start/probe/{cfg.seed}")
    problems = make_problems(task, "train", len(task.split_orderings()[0]))
    rows, owners = [], []
    fidelity = expected = ref_acc = 0.0
    for _ in range(count):
        problem = problems[rng.randrange(len(problems))]
        a, b = problem["operands"]
        right = task.answer(a, b)
        chat, answers = synthesis_case(rng, cfg, problem["problem"], right)
        ref_acc += sum(x == right for x in answers) / len(answers)
        ids = encode_prompt(tokenizer, chat) + tokenizer.encode(response_prefix(task, a, b), add_special_tokens=False)
        # One row per distinct answer: the probability of the answer's tokens and the closing
        # brace (the brace keeps "1" from counting as a prefix of "12").
        for x in sorted(set(answers) | {right}):
            tail = tokenizer.encode(f"{x}}}", add_special_tokens=False)
            rows.append((ids + tail, len(ids), len(ids) + len(tail)))
            owners.append((x in answers, x == right))
    for p, (in_references, is_right) in zip(span_probabilities(model, tokenizer.pad_token_id, rows), owners):
        fidelity += p if in_references else 0.0
        expected += p if is_right else 0.0
    return {"fidelity": fidelity / count, "expected_reward": expected / count, "reference_accuracy": ref_acc / count}


def warm_start(base: PathLike, out: PathLike, task: ToyTask, cfg: WarmStartConfig = WarmStartConfig(),
               on_step: Optional[Callable[[int, Any, Any], None]] = None) -> dict[str, Any]:
    """Fine-tune the checkpoint `base` into `out` (a Hugging Face directory with tokenizer);
    returns a summary (steps, seconds, first and last losses) also written to
    `out/warm_start.json`. `on_step(step, model, tokenizer)` runs after each step."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.train()
    rng = random.Random(f"warm-start/steps/{cfg.seed}")
    kinds = ["synthesis" if rng.random() < cfg.synthesis_fraction else "plain" for _ in range(cfg.steps)]
    batches: dict[str, list] = {}
    copy_steps = cfg.synthesis_steps if cfg.copy_target is not None else 0
    for kind in ("plain", "synthesis"):
        n_steps = kinds.count(kind) + copy_steps
        if not n_steps:
            continue
        probe = encode_example(tokenizer, *make_examples(task, cfg, kind, 1)[0])[0]
        per_step = max(1, cfg.batch_tokens // int(len(probe) * (1.3 if kind == "synthesis" else 1.1)))
        encoded = [encode_example(tokenizer, c, t) for c, t in make_examples(task, cfg, kind, n_steps * per_step * 2)]
        batches[kind] = token_batches(encoded, cfg.batch_tokens)
    cursor = {"plain": 0, "synthesis": 0}
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.98))
    warmup = max(1, cfg.steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, cfg.steps - warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    losses: list[float] = []
    tokens = 0

    def train_step(kind: str, lr: float) -> None:
        nonlocal tokens
        chunk = batches[kind][cursor[kind] % len(batches[kind])]
        cursor[kind] += 1
        input_ids, mask, labels = _batch(chunk, tokenizer.pad_token_id)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        tokens += int(mask.sum())
        if on_step is not None:
            on_step(len(losses), model, tokenizer)

    # Phase 1: plain and synthesis steps mixed until the plain accuracy target.
    expected = None
    for step, kind in enumerate(kinds):
        train_step(kind, lr_at(step))
        if step % 25 == 0 or step == cfg.steps - 1:
            log.info("warm start step %d/%d loss %.3f", step + 1, cfg.steps, losses[-1])
        if cfg.target_accuracy is not None and step + 1 >= cfg.min_steps and (step + 1) % cfg.check_every == 0:
            expected = answer_probability(model, tokenizer, task)
            if expected >= cfg.target_accuracy:
                log.info("warm start: expected accuracy %.3f >= %.3f after %d steps", expected,
                         cfg.target_accuracy, step + 1)
                break
    steps_plain = len(losses)
    # Phase 2: until the copy target, synthesis steps with plain ones mixed in
    # (copy_plain_fraction): synthesis-only steps unlearn the sums (measured: expected
    # accuracy 0.36 -> 0.08 over 35 steps).
    copy = None
    lr_copy = lr_at(steps_plain - 1)
    for step in range(copy_steps):
        if step % cfg.check_every == 0:
            copy = copy_fidelity(model, tokenizer, task, cfg)
            log.info("warm start copy phase step %d: %s", step, {k: round(v, 3) for k, v in copy.items()})
            if copy["fidelity"] >= cfg.copy_target:
                break
        train_step("plain" if rng.random() < cfg.copy_plain_fraction else "synthesis", lr_copy)
    if copy_steps:
        copy = copy_fidelity(model, tokenizer, task, cfg)
        expected = answer_probability(model, tokenizer, task)
        log.info("warm start: expected accuracy %.3f, copy %s", expected, {k: round(v, 3) for k, v in copy.items()})
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if (Path(base) / "generation_config.json").is_file():
        shutil.copy(Path(base) / "generation_config.json", tmp / "generation_config.json")
    summary = {
        "base": str(base), "steps": len(losses), "steps_plain_phase": steps_plain, "expected_accuracy": expected,
        "copy": copy, "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "tokens": tokens,
        "loss_first": round(sum(losses[:10]) / len(losses[:10]), 4),
        "loss_last": round(sum(losses[-10:]) / len(losses[-10:]), 4),
        "config": asdict(cfg), "task": asdict(task),
    }
    (tmp / "warm_start.json").write_text(json.dumps(summary, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return summary
