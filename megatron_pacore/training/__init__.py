"""training: Megatron-Core models and forward passes (one of the two packages importing megatron.core).

    parallel   TP/PP/CP/DP groups from a ParallelConfig, in one place
    cpu_shim   the CPU-only device shim (DESIGN §3), never active with CUDA
    rope       Hugging Face rotary frequencies (default, linear, llama3, yarn)
    models     actor GPTModel from a Hugging Face config (local spec on CPU, TE/FP8 on GPU),
               returned with its ModelInfo record
    critic     CriticModel: the actor backbone and a scalar value head in one module
    forward    forward-only passes through the pipeline schedule; context-parallel layout
    logprobs   vocab-parallel log-probs, entropy and values
    seqlen     the padded length a (packed) sequence needs for CP, SP and FP8
    option_checks  option combinations TE/Megatron would ignore or crash on, refused early
    planner    per-GPU memory of actor, critic and vLLM; the TP/PP/CP/DP layout that fits
    optimizer  Megatron DDP, optimizer and LR schedule (Trainable)
    update     one optimizer step over micro-batches (per-token loss mode)
    ppo_step   the Megatron side of a PPO iteration on packed micro-batches

HF-config helpers shared with checkpoint/ live in `megatron_pacore.hf_config`; training/ never
imports checkpoint/ (checkpoint/ loads into and exports from training's models).
"""
