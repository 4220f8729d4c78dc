"""data: dataset IO, training records and sequence packing.

io.py             problems in, results out (JSON lines) for inference and evaluation
train_records.py  TrainRecord: a training problem with its cached message pool (JSONL/Parquet)
packing.py        sequences laid end to end in token-budget micro-batches, and back
balancing.py      which sequences go to which data-parallel rank and micro-batch
sampler.py        each PPO iteration's problems and message sets, rendered as synthesis prompts
jsonl.py          the one JSONL append/resume helper
pool.py           message cache pools: generate, compact and grade each problem's messages
pool_job.py       the resumable, sharded pool-building job (tools/build_curriculum.py pool)
curriculum_filter.py  curriculum stage 1: accuracy band, deduplication, decontamination
synthesis_filter.py   curriculum stage 2: a stage-1 checkpoint's synthesis accuracy in (0, 1)
text_norm.py      normalised text of a problem (dedup tokens, decontamination words)
dedup.py          exact and near-duplicate problems (MinHash LSH, shingle Jaccard)
decontaminate.py  word n-gram overlap with benchmark files
released.py       export to the released PaCoRe-Train-8k rows (import is train_records)
curriculum_stats.py  counts per source and domain, message-accuracy histogram
"""
