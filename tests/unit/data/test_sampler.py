"""The training sampler: |M| uniform over lo..hi, messages without replacement, the prompt
inference renders, epochs, seeded reproducibility and exact resume."""
import json
from collections import Counter

import pytest

from megatron_pacore.data.train_records import TrainRecord
from megatron_pacore.pacore.ordering import reference_order
from megatron_pacore.pacore.prompts import render_synthesis_prompt, round_messages
from megatron_pacore.data.sampler import MessageSampler, SamplerConfig, SamplerState


def records(n=20, pool=24):
    out = []
    for p in range(n):
        # Distinct lengths, so the released order is a function of the message set alone.
        responses = [f"<think>{'x' * (k + 1)}</think>answer {p}-{k}" + " " * k for k in range(pool)]
        out.append(TrainRecord(id=f"p{p}", conversation=[{"role": "system", "content": "sys"},
                                                        {"role": "user", "content": f"Problem {p}"}],
                               responses=responses, answer=str(p), correct=[k % 3 == 0 for k in range(pool)],
                               source=f"train.jsonl:{p + 1}"))
    return out


def cfg(**kw):
    return SamplerConfig(**{"num_problems": 6, "seed": 3, **kw})


def test_message_count_is_uniform_over_lo_hi_inclusive():
    sampler = MessageSampler(records(), cfg(num_problems=10, min_messages=16, max_messages=24))
    counts = Counter(len(p.references) for _ in range(300) for p in sampler.next_batch())
    assert set(counts) == set(range(16, 25))
    expected = 3000 / 9
    chi2 = sum((counts[k] - expected) ** 2 / expected for k in range(16, 25))
    assert chi2 < 26.1  # chi-square, 8 degrees of freedom, p = 0.001


def test_messages_are_drawn_without_replacement_and_are_compacted():
    recs = records()
    sampler = MessageSampler(recs, cfg())
    for _ in range(20):
        for p in sampler.next_batch():
            assert len(set(p.reference_indices)) == len(p.reference_indices)
            for i, ref in zip(p.reference_indices, p.references):
                assert ref == p.record.responses[i].split("</think>")[-1]  # C(w)
            assert p.reference_correct == [i % 3 == 0 for i in p.reference_indices]


def test_small_pool_is_clamped_and_empty_messages_are_left_out():
    rec = TrainRecord(id="s", conversation=[{"role": "user", "content": "Q"}], answer="1",
                      responses=["a", "<think>only thinking</think>", "bb", "ccc"])
    sampler = MessageSampler([rec], cfg(num_problems=1, min_messages=16, max_messages=24))
    for _ in range(5):
        (p,) = sampler.next_batch()
        assert sorted(p.reference_indices) == [0, 2, 3]  # response 1 compacts to "": dropped


def test_prompt_is_the_one_inference_renders():
    sampler = MessageSampler(records(), cfg(reference_order="released"))
    p = sampler.next_batch()[0]
    assert p.messages == round_messages(p.record.conversation, p.record.problem, p.references)
    assert p.messages[0] == {"role": "system", "content": "sys"}
    assert p.messages[1]["content"] == render_synthesis_prompt(p.record.problem, p.references)
    # Released order: the runner's order of these responses, whatever order they were drawn in.
    chosen = sorted(p.reference_indices)
    order = reference_order([p.record.responses[i] for i in chosen], "released")
    assert p.reference_indices == [chosen[i] for i in order]
    req = p.request(max_tokens=128)
    assert req.n == 64 and req.sampling.temperature == 1.0 and req.sampling.max_tokens == 128
    assert req.messages == p.messages


def test_epochs_visit_each_problem_once_and_drop_the_short_tail():
    sampler = MessageSampler(records(20), cfg(num_problems=6))
    epoch0 = [sampler.next_batch() for _ in range(3)]          # 18 of 20; the last 2 skipped
    ids0 = [p.record.id for b in epoch0 for p in b]
    assert len(set(ids0)) == 18
    assert sampler.state().epoch == 0 and sampler.state().cursor == 18
    b = sampler.next_batch()
    assert sampler.state().epoch == 1 and sampler.state().cursor == 6
    assert len({p.record.id for p in b}) == 6
    assert sampler.permutation(0) != sampler.permutation(1)
    assert sorted(sampler.permutation(1)) == list(range(20))
    plain = MessageSampler(records(20), cfg(num_problems=6, shuffle=False))
    assert [p.record.id for p in plain.next_batch()] == [f"p{i}" for i in range(6)]


def summary(batch):
    return [(p.record.id, p.reference_indices) for p in batch]


def test_seeded_reproducibility():
    a = MessageSampler(records(), cfg(seed=7))
    b = MessageSampler(records(), cfg(seed=7))
    c = MessageSampler(records(), cfg(seed=8))
    runs = [[summary(s.next_batch()) for _ in range(4)] for s in (a, b, c)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_restored_sampler_continues_exactly():
    whole = MessageSampler(records(), cfg())
    expected = [summary(whole.next_batch()) for _ in range(10)]
    first = MessageSampler(records(), cfg())
    got = [summary(first.next_batch()) for _ in range(4)]          # crosses no epoch yet ...
    saved = json.loads(json.dumps(first.state_dict()))             # ... through a checkpoint
    resumed = MessageSampler(records(), cfg())
    resumed.load_state_dict(saved)
    got += [summary(resumed.next_batch()) for _ in range(6)]       # ... and across epochs 1-3
    assert got == expected
    assert resumed.state().iteration == 10 and resumed.state().epoch == 3


def test_errors_name_the_field_or_record():
    with pytest.raises(ValueError, match="sampler.num_problems=6 but the stage has only 5 problems"):
        MessageSampler(records(5), cfg())
    empty = TrainRecord(id="e", conversation=[{"role": "user", "content": "Q"}], answer="1",
                        responses=["<think>x</think>"], source="s2.jsonl:7")
    with pytest.raises(ValueError, match=r"s2\.jsonl:7: record 'e' has no non-empty cached response"):
        MessageSampler([empty], cfg(num_problems=1))
    state = MessageSampler(records(), cfg()).state()
    with pytest.raises(ValueError, match="other training data"):
        MessageSampler(records(19), cfg(), state=state)
    with pytest.raises(ValueError, match="sampler.seed=3, the config has sampler.seed=4"):
        MessageSampler(records(), cfg(seed=4), state=state)
    with pytest.raises(ValueError, match="malformed"):
        SamplerState.from_dict({"epoch": 1})
    for field, value in [("num_problems", 0), ("min_messages", 0), ("samples_per_problem", 0),
                         ("temperature", 0.0), ("reference_order", "sorted"), ("seed", -1)]:
        with pytest.raises(ValueError, match=f"sampler.{field}"):
            SamplerConfig(**{field: value})
    with pytest.raises(ValueError, match="sampler.max_messages must be >= sampler.min_messages=16, got 8"):
        SamplerConfig(max_messages=8)
