"""Worker (2 gloo ranks): distributed checkpoints across layouts, export, and clear errors.

Per family: both ranks convert HF -> Megatron (--tp 2) with the streaming converter; the model
loads it at TP=2 and PP=2 (logits vs transformers); the TP=2 model is saved with Megatron's
own dist_checkpointing and loaded at TP=1 (logits vs the TP=2 logits); both checkpoints are
exported back to HF and compared tensor by tensor with the original. Then a Qwen3 model is
asked to load a Qwen2 checkpoint and a Qwen3 checkpoint of another MLP width; a checkpoint
holding optimizer state besides the model loads; a critic refuses an actor checkpoint (no
value head) by naming the head. Rank 0 writes the measurements to --result; logit
differences as `rank_outputs.gather_max` ({"max", "ranks"}: a rank without logits reports
None, not a number).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
from rank_outputs import gather_max


def logits_of(ckpt, tp, pp, ids):
    from megatron_pacore.checkpoint.dist import hf_config_of, load_model, read_info
    from megatron_pacore.training.forward import MicroBatch, forward_only, gather_vocab
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.parallel import ParallelConfig, initialize_parallel

    groups = initialize_parallel(ParallelConfig(tp=tp, pp=pp, device="cpu"))
    cfg = hf_config_of(ckpt)
    model, info = build_actor(cfg, groups, ModelOptions(precision="fp32"),
                              padded_vocab=read_info(ckpt).padded_vocab_size)
    load_model(model, info, ckpt)
    model.eval()
    outs = forward_only(model, groups, [MicroBatch(ids)], lambda lg, mb: gather_vocab(lg, groups, cfg.vocab_size))
    return model, info, (outs[0] if outs else None)


def max_over_ranks(x: float) -> float:
    t = torch.tensor(x, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def identical(dir_a: Path, dir_b: Path) -> bool:
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint

    a, b = HFCheckpoint(dir_a), HFCheckpoint(dir_b)
    if sorted(a.names()) != sorted(b.names()):
        return False
    return all(a.get(n).dtype == b.get(n).dtype and torch.equal(a.get(n), b.get(n)) for n in a.names())


def family_checks(name: str, hf_dir: str, work: Path, res: dict) -> None:
    from megatron_pacore.checkpoint.convert import hf_to_megatron, megatron_to_hf
    from megatron_pacore.checkpoint.dist import CheckpointInfo, save_model
    from megatron_pacore.checkpoint.verify import hf_logits, random_tokens

    rank, world = dist.get_rank(), dist.get_world_size()
    conv, saved = work / f"conv_{name}", work / f"saved_{name}"
    info = hf_to_megatron(hf_dir, conv, tp=2, rank=rank, world=world)
    dist.barrier()
    vocab = json.loads((Path(hf_dir) / "config.json").read_text())["vocab_size"]
    ids = random_tokens(vocab, 2, 40, seed=1)
    ref = hf_logits(hf_dir, ids)
    model, model_info, tp2 = logits_of(conv, 2, 1, ids)
    res[f"{name}/converted_tp2_vs_hf"] = gather_max((tp2 - ref).abs().max().item() if tp2 is not None else None)
    save_model(model, model_info, saved, CheckpointInfo(name, info.padded_vocab_size, info.num_layers, 2, 1, "fp32"),
               hf_dir)
    _, _, pp2 = logits_of(conv, 1, 2, ids)
    res[f"{name}/converted_pp2_vs_hf"] = gather_max((pp2 - ref).abs().max().item() if pp2 is not None else None)
    _, _, tp1 = logits_of(saved, 1, 1, ids)
    both = tp1 is not None and tp2 is not None
    res[f"{name}/saved_tp2_loaded_tp1_vs_tp2"] = gather_max((tp1 - tp2).abs().max().item() if both else None)
    res[f"{name}/saved_tp2_loaded_tp1_vs_hf"] = gather_max((tp1 - ref).abs().max().item() if tp1 is not None else None)
    if rank == 0:
        megatron_to_hf(saved, work / f"export_saved_{name}")
        megatron_to_hf(conv, work / f"export_conv_{name}")
        res[f"{name}/export_of_saved_identical"] = identical(Path(hf_dir), work / f"export_saved_{name}")
        res[f"{name}/export_of_converted_identical"] = identical(Path(hf_dir), work / f"export_conv_{name}")
    dist.barrier()


def error_checks(models: dict, wide: str, bad: dict, work: Path, res: dict) -> None:
    from megatron_pacore.checkpoint.convert import hf_to_megatron
    from megatron_pacore.checkpoint.dist import load_model
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.parallel import ParallelConfig, initialize_parallel

    rank, world = dist.get_rank(), dist.get_world_size()
    hf_to_megatron(wide, work / "conv_wide", tp=2, rank=rank, world=world)
    dist.barrier()
    groups = initialize_parallel(ParallelConfig(tp=1, device="cpu"))
    model, info = build_actor(HFCheckpoint(models["qwen3"]).config, groups, ModelOptions(precision="fp32"))
    for label, ckpt in (("wrong_family", work / "saved_qwen2"), ("wrong_shape", work / "conv_wide")):
        try:
            load_model(model, info, ckpt)
            res[label] = "loaded"
        except ValueError as e:
            res[label] = str(e)
    from megatron_pacore.checkpoint.loader import load_hf_weights

    for label, hf_dir in bad.items():  # HF checkpoints holding a tensor the table would not read
        family_model, family_info = model, info
        if HFCheckpoint(hf_dir).family.name != "qwen3":
            family_model, family_info = build_actor(HFCheckpoint(hf_dir).config, groups,
                                                    ModelOptions(precision="fp32"))
        try:
            res[label] = f"loaded {load_hf_weights(family_model, family_info, hf_dir, 1, 0)}"
        except ValueError as e:
            res[label] = str(e)


def critic_checks(hf_dir: str, work: Path, res: dict) -> None:
    """A critic saved at TP=2 loads at TP=1 with its value head and gives the same values."""
    from megatron_pacore.checkpoint.dist import CheckpointInfo, load_model, save_model
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.training.critic import build_critic
    from megatron_pacore.training.forward import MicroBatch
    from megatron_pacore.training.logprobs import compute_values
    from megatron_pacore.training.models import ModelOptions
    from megatron_pacore.training.parallel import ParallelConfig, initialize_parallel
    from megatron_pacore.checkpoint.verify import random_tokens

    hf = HFCheckpoint(hf_dir)
    ids = random_tokens(hf.config.vocab_size, 2, 16, seed=2)
    groups = initialize_parallel(ParallelConfig(tp=2, device="cpu"))
    critic, info = build_critic(hf.config, groups, ModelOptions(precision="fp32"), head_seed=1)
    load_hf_weights(critic, info, hf, 2, groups.tp_rank)
    (before,) = compute_values(critic.eval(), groups, [MicroBatch(ids)])
    save_model(critic, info, work / "critic", CheckpointInfo("qwen2", info.padded_vocab_size, 2, 2, 1, "fp32"))
    groups = initialize_parallel(ParallelConfig(tp=1, device="cpu"))
    other, other_info = build_critic(hf.config, groups, ModelOptions(precision="fp32"), head_seed=2)
    head_diff = (other.value_head.weight - critic.value_head.weight).abs().max().item()  # seeds 2 vs 1
    load_model(other, other_info, work / "critic")
    (after,) = compute_values(other.eval(), groups, [MicroBatch(ids)])
    res["critic_tp2_loaded_tp1_values_diff"] = max_over_ranks((after - before).abs().max().item())
    res["critic_heads_differ_before_load"] = max_over_ranks(head_diff)
    try:  # an actor checkpoint has no value head: the critic must not load it silently
        load_model(other, other_info, work / "conv_qwen2")
        res["critic_from_actor_checkpoint"] = "loaded"
    except ValueError as e:
        res["critic_from_actor_checkpoint"] = str(e)


def extra_state_checks(hf_dir: str, work: Path, res: dict) -> None:
    """A checkpoint holding more than the model (optimizer state) loads and gives the same
    logits; Megatron calls such keys `missing` (in the checkpoint, not asked for)."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing import ShardedTensor

    from megatron_pacore.checkpoint.dist import CheckpointInfo, write_info
    from megatron_pacore.checkpoint.verify import random_tokens

    vocab = json.loads((Path(hf_dir) / "config.json").read_text())["vocab_size"]
    ids = random_tokens(vocab, 2, 16, seed=3)
    model, info, before = logits_of(work / "conv_qwen2", 2, 1, ids)
    ckpt = work / "with_optimizer"
    if dist.get_rank() == 0:
        ckpt.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    state = model.sharded_state_dict()
    exp_avg = torch.arange(6.0).reshape(2, 3)
    state["optimizer.exp_avg"] = ShardedTensor.from_rank_offsets(
        "optimizer.state.exp_avg", exp_avg, replica_id=dist.get_rank())
    dist_checkpointing.save(state, str(ckpt))
    if dist.get_rank() == 0:
        write_info(ckpt, CheckpointInfo("qwen2", info.padded_vocab_size, 2, 2, 1, "fp32"), hf_dir=hf_dir)
    dist.barrier()
    try:
        _, _, after = logits_of(ckpt, 1, 1, ids)
        res["optimizer_state_checkpoint_logits_diff"] = max_over_ranks((after - before).abs().max().item())
    except ValueError as e:
        res["optimizer_state_checkpoint_logits_diff"] = str(e)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--result", required=True)
    p.add_argument("--models", required=True, help="JSON {family: hf_dir}")
    p.add_argument("--wide", required=True, help="a Qwen3 checkpoint with another intermediate_size")
    p.add_argument("--bad", required=True, help="JSON {label: HF dir} of checkpoints for load_hf_weights")
    p.add_argument("--work", required=True)
    args = p.parse_args()
    from megatron_pacore.training.parallel import ParallelConfig, destroy_parallel, initialize_parallel

    initialize_parallel(ParallelConfig(device="cpu"))
    models = json.loads(args.models)
    res: dict = {}
    for name, hf_dir in models.items():
        start = time.time()
        family_checks(name, hf_dir, Path(args.work), res)
        res[f"seconds/{name}"] = time.time() - start
    error_checks(models, args.wide, json.loads(args.bad), Path(args.work), res)
    critic_checks(models["qwen2"], Path(args.work), res)
    extra_state_checks(models["qwen2"], Path(args.work), res)
    if dist.get_rank() == 0:
        Path(args.result).write_text(json.dumps(res))
    destroy_parallel()


if __name__ == "__main__":
    main()
