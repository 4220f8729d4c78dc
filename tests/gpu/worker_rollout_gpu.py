"""Worker (1 GPU): the two GPU weight-sync paths against a perturbed copy of the tiny model.

1. Colocated ('reload', external launcher, sleep mode): the engine sleeps (level 1), wakes its
   weights, loads the perturbed CUDA tensors, `check_weights` (GPU: parameters) passes, it
   wakes fully and its prompt log-probs match `transformers` on the perturbed weights.
2. CUDA IPC ('ipc'): a second engine whose engine core is its own process
   (`weight_transfer_config=ipc`) receives the same tensors through vLLM's IPC trainer engine;
   its prompt log-probs match too, and differ from before the transfer.
Writes the figures to --result.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch


def hf_logprobs(model, seqs):
    out = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s], device="cuda")
            lp = torch.log_softmax(model(ids).logits.float()[0, :-1], -1)
            out.append(lp.gather(1, ids[0, 1:, None])[:, 0].cpu())
    return out


def diff(vllm_lps, ref):
    return max((torch.tensor(v) - r).abs().max().item() for v, r in zip(vllm_lps, ref))


def prompt_logprobs(llm, seqs):
    from vllm import SamplingParams, TokensPrompt

    outs = llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs],
                        SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    return [[step[t].logprob for t, step in zip(s[1:], o.prompt_logprobs[1:])] for s, o in zip(seqs, outs)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--phase", choices=("colocated", "ipc"), required=True)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    from megatron_pacore.inference.rollout_types import RolloutEngineConfig, WeightSyncConfig

    ref = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).cuda().eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=gen).cuda() * 0.02 * p.abs().mean())
    weights = [(n, p.detach().contiguous()) for n, p in ref.named_parameters()
               if not (ref.config.tie_word_embeddings and n == "lm_head.weight")]
    vocab = ref.config.vocab_size
    seqs = [torch.randint(0, vocab, (48,), generator=gen).tolist() for _ in range(3)]
    expected = hf_logprobs(ref, seqs)
    res = {}
    if args.phase == "colocated":
        from megatron_pacore.inference.rollout import ColocatedVLLM

        engine = ColocatedVLLM(RolloutEngineConfig(model=args.model, dtype="float32", max_model_len=256,
                                                   gpu_memory_utilization=0.3, show_progress=False))
        res["sleep_enabled"] = engine.sleep_enabled
        res["before"] = diff(engine.prompt_logprobs(seqs), expected)
        engine.sleep()
        stats = engine.sync_weights([weights])
        c = engine.check_weights(weights)
        res["check"] = {"tensors": c.tensors, "method": c.method}
        engine.wake()
        res["after"] = diff(engine.prompt_logprobs(seqs), expected)
        res["tensors"] = stats.tensors
        engine.close()
    else:
        os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # IPC handles cross the engine-core boundary
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
        from vllm import LLM

        from megatron_pacore.inference.transfer import (
            ExportSource, LLMWeightSyncClient, TransferSender, engine_weight_transfer_args)

        sync = WeightSyncConfig(backend="ipc")
        llm = LLM(model=args.model, dtype="float32", max_model_len=256, gpu_memory_utilization=0.3,
                  enforce_eager=True, **engine_weight_transfer_args(sync))
        res["before"] = diff(prompt_logprobs(llm, seqs), expected)
        sender = TransferSender(sync, LLMWeightSyncClient(llm), ExportSource(lambda: iter(weights)), rank=0)
        res["send_s"] = sender.send()
        res["after"] = diff(prompt_logprobs(llm, seqs), expected)
        sender.close()
    Path(args.result).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
