"""checkpoint: Hugging Face <-> Megatron-Core, driven by one declarative table per family.

    mapping     the tables (names, transforms, TP axes) and family detection
    transforms  the named special cases as tensor functions (QKV, gate/up, vocab padding)
    hf_io       streaming safetensors reading/writing and checkpoint checks
    loader      HF checkpoint -> a live TP/PP model shard
    dcp_stream  streaming torch_dist (dist_checkpointing) pieces: lazy writer, chunk reader
    dist        Megatron distributed checkpoints: save/load live models, metadata, checks
    convert     streaming HF <-> Megatron checkpoint conversion (tools/convert_hf.py)
    export      live model -> HF-named tensor buckets of bounded bytes (weight sync)
"""
