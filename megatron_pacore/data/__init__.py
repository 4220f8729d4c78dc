"""data: dataset IO, training records and sequence packing.

io.py             problems in, results out (JSON lines) for inference and evaluation
train_records.py  TrainRecord: a training problem with its cached message pool (JSONL/Parquet)
packing.py        sequences into token-budget micro-batches balanced over data-parallel ranks
"""
