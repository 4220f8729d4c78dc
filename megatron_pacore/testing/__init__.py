"""Offline test fixtures that the package itself provides: tiny checkpoints and tokenizers.

No model hub is reachable in CI, so tests, demos and benchmarks build their own model with
`megatron_pacore.testing.tiny.make_tiny_model` (`tools/make_tiny_model.py` is its CLI).
"""
