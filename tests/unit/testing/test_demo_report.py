"""The demo's closing report: the reward line and the accuracy tables read the right fields."""
from __future__ import annotations

import json

from megatron_pacore.testing.demo_report import reward_rise, row, table


def test_row_takes_message_accuracy_and_each_method_by_name():
    metrics = {"message_accuracy": {"low": [0.25, 0.5]},
               "methods": [{"method": "majority", "accuracy": 0.5}, {"method": "pacore", "accuracy": 0.75},
                           {"method": "single", "accuracy": 0.125}]}
    assert row(metrics) == [0.25, 0.125, 0.5, 0.75]
    text = table({"initial": [0.25, 0.125, 0.5, 0.75], "trained": [0.5, 0.5, 0.625, 1.0]}, 9, 8, "Held-out")
    lines = text.splitlines()
    assert lines[0] == "Held-out: 9, 8 runs, level low (4 messages, then synthesis)"
    assert lines[2] == "| policy | message accuracy | single sample | majority vote | PaCoRe |"
    assert lines[4] == "| initial | 0.250 | 0.125 | 0.500 | 0.750 |"
    assert lines[5] == "| trained | 0.500 | 0.500 | 0.625 | 1.000 |"


def test_reward_rise_compares_the_first_and_last_five_iterations(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rewards = [0.1, 0.2, 0.3, 0.2, 0.2, 0.9, 0.4, 0.5, 0.6, 0.5, 0.6, 0.4]
    path.write_text("".join(json.dumps({"iteration": i, "reward/mean": r}) + "\n" for i, r in enumerate(rewards)))
    assert reward_rise(path) == "reward over 12 iterations: first 5 0.200, last 5 0.520 (+0.320)"
    path.write_text(json.dumps({"reward/mean": 0.5}) + "\n")
    assert reward_rise(path) == "reward: 1 iterations logged (fewer than 10)"
