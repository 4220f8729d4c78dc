"""ModelInfo: the record a model builder returns; bad values name the field."""
from types import SimpleNamespace

import pytest

from megatron_pacore.hf_config import FAMILIES
from megatron_pacore.training.models import ModelInfo

CFG = SimpleNamespace(vocab_size=1002)


def test_roles_are_actor_or_critic():
    assert ModelInfo(hf_config=CFG, family=FAMILIES["qwen3"], padded_vocab_size=1024, role="critic",
                     tied=False).is_critic
    with pytest.raises(ValueError, match="ModelInfo.role must be one of"):
        ModelInfo(hf_config=CFG, family=FAMILIES["qwen3"], padded_vocab_size=1024, role="reward", tied=False)


def test_padded_vocabulary_smaller_than_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match="ModelInfo.padded_vocab_size=1000 < vocab_size=1002"):
        ModelInfo(hf_config=CFG, family=FAMILIES["qwen3"], padded_vocab_size=1000, role="actor", tied=True)
