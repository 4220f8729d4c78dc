"""checkpoint: Hugging Face <-> Megatron-Core, driven by one declarative table per family.

    mapping     the per-family tables (lists of mappings) and their iteration orders
    transforms  one class per kind of mapping (Copy, QKV, GatedMLP, VocabPadded, Tied): global
                shape, from_hf / to_hf, shard / unshard
    hf_io       streaming safetensors reading/writing and checkpoint checks
    loader      HF checkpoint -> a live TP/PP model shard
    dcp_stream  streaming torch_dist (dist_checkpointing) pieces: lazy writer, chunk reader
    dist        Megatron distributed checkpoints: save/load live models, metadata, checks
    convert     streaming HF <-> Megatron checkpoint conversion (tools/convert_hf.py)
    export      live model -> HF-named tensor buckets of bounded bytes (weight sync)
    verify      logit parity of a converted checkpoint with transformers

Imports training/ (models, parallel groups) and `megatron_pacore.hf_config`; never imported by
training/.
"""
