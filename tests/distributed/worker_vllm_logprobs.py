"""Worker (1 process, vLLM in-process + Megatron): log-probs of sampled tokens, and weight sync.

1. vLLM (fp32, logprobs_mode=processed_logprobs) samples responses at temperature 0.7 and
   reports each sampled token's log-prob; the Megatron actor scores the same prompt+response
   tokens with `compute_logprobs(temperature=0.7)`.
2. Every Megatron weight (norm scales and biases too) is perturbed, exported with `export_buckets` and pushed into vLLM
   with `worker.model_runner.reload_weights(weights_iterator=...)` (plus the tied lm_head
   refresh vLLM's CPU build needs); vLLM samples again and the two sides are compared again
   (and against the stale weights, which must now disagree).
Writes mean/max |diff| per phase to --result.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import torch  # noqa: E402

T = 0.7


def sample(llm, prompts, n_tokens):
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(temperature=T, max_tokens=n_tokens, logprobs=0, ignore_eos=True)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    seqs, lps = [], []
    for prompt, out in zip(prompts, outs):
        comp = out.outputs[0]
        seqs.append(prompt + list(comp.token_ids))
        lps.append([step[tok].logprob for tok, step in zip(comp.token_ids, comp.logprobs)])
    return seqs, lps


def megatron_scores(model, groups, seqs, vocab):
    from megatron_pacore.training.forward import MicroBatch
    from megatron_pacore.training.logprobs import compute_logprobs

    return [compute_logprobs(model, groups, [MicroBatch(torch.tensor([s]))], vocab, temperature=T)[0][0][0]
            for s in seqs]


def compare(seqs, vllm_lps, mega, prompt_len):
    diffs = torch.cat([(m[prompt_len:] - torch.tensor(v)).abs() for m, v in zip(mega, vllm_lps)])
    return {"mean": diffs.mean().item(), "max": diffs.max().item(), "count": diffs.numel()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--result", required=True)
    p.add_argument("--model", required=True)
    args = p.parse_args()
    from vllm import LLM

    llm = LLM(model=args.model, dtype="float32", max_model_len=256, enforce_eager=True,
              logprobs_mode="processed_logprobs", seed=0)

    from megatron_pacore.checkpoint.export import export_buckets
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.parallel import ParallelConfig, initialize_parallel

    groups = initialize_parallel(ParallelConfig(tp=1, device="cpu"))
    hf = HFCheckpoint(args.model)
    vocab = hf.config.vocab_size
    model, info = build_actor(hf.config, groups, ModelOptions(precision="fp32"))
    load_hf_weights(model, info, hf, 1, 0)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    prompt_len = 16
    prompts = [torch.randint(0, vocab, (prompt_len,), generator=gen).tolist() for _ in range(4)]
    res = {}
    seqs, vlp = sample(llm, prompts, 32)
    res["initial"] = compare(seqs, vlp, megatron_scores(model, groups, seqs, vocab), prompt_len)

    with torch.no_grad():  # a visible update: scale every parameter by 1.1
        for param in model.parameters():
            param.mul_(1.1)
    weights = [kv for bucket in export_buckets(model, info, groups, bucket_bytes=256 << 10) for kv in bucket]

    def reload(worker):
        worker.model_runner.reload_weights(weights_iterator=iter(weights))
        m = worker.model_runner.get_model()
        if m.config.tie_word_embeddings:
            # vLLM 0.32 on CPU: the tied lm_head gets no weights of its own on reload and keeps
            # its stale prepacked GEMM copy; re-running its post-load processing refreshes it.
            m.lm_head.quant_method.process_weights_after_loading(m.lm_head)

    llm.collective_rpc(reload)
    llm.reset_prefix_cache()
    seqs, vlp = sample(llm, prompts, 32)
    res["after_sync"] = compare(seqs, vlp, megatron_scores(model, groups, seqs, vocab), prompt_len)
    with torch.no_grad():
        for param in model.parameters():
            param.div_(1.1)
    res["stale"] = compare(seqs, vlp, megatron_scores(model, groups, seqs, vocab), prompt_len)
    Path(args.result).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
