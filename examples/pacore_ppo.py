"""PaCoRe PPO training: `torchrun --nproc_per_node N examples/pacore_ppo.py --config FILE.yaml [key=value ...]`.

    torchrun --nproc_per_node 2 examples/pacore_ppo.py --config examples/configs/tiny_cpu.yaml
    torchrun --nnodes 4 --nproc_per_node 8 ... examples/pacore_ppo.py \
        --config examples/configs/qwen3_8b_stage1.yaml model.path=/ckpt/Qwen3-8B resume=true

Everything is in megatron_pacore.trainer; this file only parses and runs it.
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="YAML file of a TrainConfig (examples/configs/*.yaml)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. sampler.num_problems=8")
    args = ap.parse_args(argv)

    from megatron_pacore.config import load_config
    from megatron_pacore.train_config import TrainConfig
    from megatron_pacore.trainer import Trainer

    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer = Trainer(cfg)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
