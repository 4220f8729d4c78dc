"""megatron_pacore: train and serve PaCoRe (Parallel Coordinated Reasoning, arXiv 2601.05593)."""

__version__ = "0.1.0"
