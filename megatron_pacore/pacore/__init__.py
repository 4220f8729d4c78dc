"""The PaCoRe method: round schedule, synthesis prompt, compaction, reference order, runner."""
from megatron_pacore.pacore.compaction import compact, compact_bounded
from megatron_pacore.pacore.ordering import reference_order
from megatron_pacore.pacore.prompts import render_synthesis_prompt, round_messages
from megatron_pacore.pacore.runner import PaCoReRunner, RunnerConfig
from megatron_pacore.pacore.schedule import LEVELS, RoundSchedule

__all__ = [
    "LEVELS",
    "PaCoReRunner",
    "RoundSchedule",
    "RunnerConfig",
    "compact",
    "compact_bounded",
    "reference_order",
    "render_synthesis_prompt",
    "round_messages",
]
