"""Worker (2 gloo ranks): a TP=2 Megatron actor and a TP=2 colocated vLLM engine in the same
two processes; weight sync and its check, before and after an update.

1. The actor (fp32, the tiny checkpoint) is synced into the engine through `export_buckets`,
   which takes the per-rank path (same TP, same processes: no gather); `check_weights`
   compares every engine weight (CPU: the prepacked GEMMs read back); vLLM's log-probs of
   fixed sequences and of its own samples are compared with Megatron's.
2. The actor is perturbed (seeded noise on every parameter, as an update would): before a
   re-sync the engine disagrees (and `check_weights` says so); after a re-sync through the
   gather path (forced, with the export thread), they agree again.
3. Another perturbation, synced with one tensor held back: `check_weights` must name it.
4. A bare `reload_weights` without the tied lm_head re-processing: the check must name the
   LM head's stale prepacked GEMM.
5. Another perturbation, synced through the per-rank path again (after the gather path and
   vLLM's own reload): exact again.
With --vocab-divisible-by 1 Megatron pads the vocabulary differently from vLLM, so that the
per-rank path must re-slice the embedding rows between the ranks. With --quick only phase 1
runs (for a second model family). Rank 0 writes the figures to --result.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

T = 0.7
HELD_BACK = "model.layers.1.mlp.down_proj.weight"


def megatron_logprobs(actor, groups, seqs, vocab, temperature):
    from megatron_pacore.training.forward import MicroBatch
    from megatron_pacore.training.logprobs import compute_logprobs

    batches = [MicroBatch(torch.tensor([list(s)])) for s in seqs]
    return [lp[0] for lp, _ in compute_logprobs(actor, groups, batches, vocab, temperature=temperature)]


def max_diff(a: list[list[float]], b: list[torch.Tensor]) -> float:
    """a: vLLM's log-probs of tokens 1..s-1; b: token-aligned [s] (position 0 has no context)."""
    return max((torch.tensor(x) - y[-len(x):]).abs().max().item() for x, y in zip(a, b))


@torch.no_grad()
def perturb(actor, seed: int) -> None:
    """Noise of 2% of each tensor's scale; the same draws on both ranks for replicated ones."""
    gen = torch.Generator().manual_seed(seed)
    for p in actor.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * 0.02 * p.abs().mean().clamp_min(1e-3))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--result", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--quick", action="store_true", help="phase 1 only (another model family)")
    ap.add_argument("--vocab-divisible-by", type=int, default=128,
                    help="Megatron's make_vocab_size_divisible_by (1: shard boundaries unlike vLLM's)")
    args = ap.parse_args()

    from megatron_pacore.checkpoint.export import export_buckets, export_hf_tensors
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.inference.rollout import ColocatedVLLM
    from megatron_pacore.inference.rollout_types import (
        RolloutEngineConfig, WeightMismatchError, WeightSyncConfig)
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.parallel import ParallelConfig, destroy_parallel, initialize_parallel
    from megatron_pacore.types import SamplingSettings

    groups = initialize_parallel(ParallelConfig(tp=2, device="cpu"))
    hf = HFCheckpoint(args.model)
    vocab = hf.config.vocab_size
    actor, actor_info = build_actor(hf.config, groups, ModelOptions(
        precision="fp32", make_vocab_size_divisible_by=args.vocab_divisible_by))
    load_hf_weights(actor, actor_info, hf, 2, groups.tp_rank)
    actor.eval()
    # Different weights from the checkpoint the engine starts from, so that the first sync
    # is visible too.
    perturb(actor, seed=1)

    engine = ColocatedVLLM(RolloutEngineConfig(model=args.model, tensor_parallel_size=2, dtype="float32",
                                               max_model_len=256, show_progress=False))
    gen = torch.Generator().manual_seed(0)
    fixed = [torch.randint(0, vocab, (48,), generator=gen).tolist() for _ in range(3)]
    prompts = [torch.randint(0, vocab, (12,), generator=gen).tolist() for _ in range(3)]

    def sync(skip: str | None = None):
        buckets = export_buckets(actor, actor_info, groups, bucket_bytes=256 << 10)
        if skip:
            buckets = ([(n, t) for n, t in b if n != skip] for b in buckets)
        return engine.sync_weights(buckets)

    def check():
        try:
            c = engine.check_weights(export_hf_tensors(actor, actor_info, groups))
            return {"ok": True, "tensors": c.tensors, "engine_tensors": c.engine_tensors, "method": c.method}
        except WeightMismatchError as e:
            return {"ok": False, "error": str(e)}

    res: dict = {}
    before_sync = engine.prompt_logprobs(fixed)
    res["unsynced_vs_actor"] = max_diff(before_sync, megatron_logprobs(actor, groups, fixed, vocab, 1.0))
    res["unsynced_check"] = check()

    def record(stats):
        return {"buckets": stats.buckets, "tensors": stats.tensors, "bytes": stats.bytes, "path": stats.path}

    res["padded_vocab"] = actor_info.padded_vocab_size
    res["sync1"] = record(sync())
    res["check1"] = check()
    v1 = engine.prompt_logprobs(fixed)
    res["fixed1"] = max_diff(v1, megatron_logprobs(actor, groups, fixed, vocab, 1.0))
    if args.quick:
        if dist.get_rank() == 0:
            Path(args.result).write_text(json.dumps(res))
        engine.close()
        destroy_parallel()
        return
    samples = engine.generate(prompts, SamplingSettings(max_tokens=16, temperature=T, ignore_eos=True), n=2)
    res["finish_reasons"] = sorted({s.finish_reason for s in samples})
    res["samples"] = len(samples)
    res["sampled_tokens"] = sum(len(s.response_token_ids) for s in samples)
    res["order"] = [(s.prompt_index, s.sample_index) for s in samples]
    seqs = [list(s.prompt_token_ids) + s.response_token_ids for s in samples]
    mega = megatron_logprobs(actor, groups, seqs, vocab, T)
    res["sampled1"] = max((torch.tensor(s.logprobs) - m[len(s.prompt_token_ids):]).abs().max().item()
                          for s, m in zip(samples, mega))
    both = [None, None]
    dist.all_gather_object(both, [s.response_token_ids for s in samples])
    res["ranks_agree"] = both[0] == both[1]

    try:
        engine.generate([[1] * 300], SamplingSettings(max_tokens=4))
        res["too_long"] = "no error"
    except ValueError as e:
        res["too_long"] = str(e)
    try:
        engine.sync_weights(export_buckets(actor, actor_info, groups, dtype=torch.bfloat16))
        res["wrong_dtype"] = "no error"
    except ValueError as e:
        res["wrong_dtype"] = str(e)
    res["fixed_after_refusal"] = max_diff(engine.prompt_logprobs(fixed), megatron_logprobs(actor, groups, fixed, vocab, 1.0))

    perturb(actor, seed=2)
    # The per-rank path handed the actor's own memory to the GEMM prepack: the update must
    # not have reached the engine (its outputs are those of before, bit for bit).
    res["engine_after_update"] = max_diff(engine.prompt_logprobs(fixed), [torch.tensor(x) for x in v1])
    res["stale_vs_actor"] = max_diff(v1, megatron_logprobs(actor, groups, fixed, vocab, 1.0))
    res["stale_check"] = check()
    # This re-sync through the gather path, with the export thread.
    engine.sync_config = WeightSyncConfig(prefetch=True, rank_shards=False)
    res["sync2"] = record(sync())
    engine.sync_config = WeightSyncConfig()
    res["check2"] = check()
    v2 = engine.prompt_logprobs(fixed)
    res["fixed2"] = max_diff(v2, megatron_logprobs(actor, groups, fixed, vocab, 1.0))
    res["moved"] = max_diff(v2, [torch.tensor(x) for x in v1])

    perturb(actor, seed=3)
    res["sync_held_back"] = record(sync(skip=HELD_BACK))  # a plain bucket stream: the gather path
    res["held_back_check"] = check()
    engine.sync_config = WeightSyncConfig(rank_shards=True)
    try:
        sync(skip=HELD_BACK)
        res["forced_on_a_stream"] = "no error"
    except ValueError as e:
        res["forced_on_a_stream"] = str(e)
    engine.sync_config = WeightSyncConfig()

    # 4. vLLM's own reload_weights alone (no tied lm_head re-processing): the embedding
    # table is new but the LM head's prepacked GEMM is stale, and the check must see it.
    perturb(actor, seed=4)
    weights = [kv for b in export_buckets(actor, actor_info, groups) for kv in b]
    engine.llm.collective_rpc(lambda w: w.model_runner.reload_weights(weights_iterator=iter(weights)))
    res["stale_lm_head_check"] = check()

    # 5. The per-rank path again, after the gather path and vLLM's own reload.
    perturb(actor, seed=5)
    engine.sync_config = WeightSyncConfig(rank_shards=True)
    res["sync3"] = record(sync())
    engine.sync_config = WeightSyncConfig()
    res["check3"] = check()
    res["fixed3"] = max_diff(engine.prompt_logprobs(fixed), megatron_logprobs(actor, groups, fixed, vocab, 1.0))

    if dist.get_rank() == 0:
        Path(args.result).write_text(json.dumps(res))
    engine.close()
    destroy_parallel()


if __name__ == "__main__":
    main()
