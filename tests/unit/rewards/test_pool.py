"""The per-item-deadline process pool behind the graders (real processes, stdlib targets)."""
from __future__ import annotations

import time

import pytest

from megatron_pacore.rewards.pool import Outcome, TimeoutPool


def test_results_come_back_in_order_with_values():
    with TimeoutPool("operator:add", workers=2, timeout_s=5) as pool:
        assert pool.map([(i, 10 * i) for i in range(20)]) == [Outcome(11 * i) for i in range(20)]
        assert pool.map([]) == []


def test_a_hung_item_times_out_its_worker_is_replaced_and_the_rest_complete():
    with TimeoutPool("time:sleep", workers=2, timeout_s=0.5) as pool:
        start = time.monotonic()
        out = pool.map([(0.01,), (60,), (0.01,), (0.01,)])
        assert time.monotonic() - start < 5
        assert [o.error for o in out] == [None, "timeout", None, None]
        assert pool.restarts == 1
        assert pool.map([(0.0,)]) == [Outcome(None)]


def test_a_dying_worker_reports_a_crash_and_is_replaced():
    with TimeoutPool("os:_exit", workers=1, timeout_s=5) as pool:
        out = pool.map([(3,), (4,)])
        assert [o.error for o in out] == ["crash: worker exited with 3", "crash: worker exited with 4"]
        assert pool.restarts == 2


def test_an_exception_is_reported_and_the_worker_keeps_serving():
    with TimeoutPool("math:sqrt", workers=1, timeout_s=5) as pool:
        out = pool.map([(-1.0,), (4.0,)])
        assert out[0].error.startswith("exception: ValueError: math domain error")
        assert out[1] == Outcome(2.0)
        assert pool.restarts == 0


def test_invalid_settings_are_value_errors():
    with pytest.raises(ValueError, match="workers"):
        TimeoutPool("math:sqrt", workers=0, timeout_s=1)
    with pytest.raises(ValueError, match="timeout_s"):
        TimeoutPool("math:sqrt", workers=1, timeout_s=0)


def slow_start():
    """A worker initializer slower than the item timeout below (imported by the workers)."""
    time.sleep(1.5)


def test_the_deadline_does_not_count_a_slow_worker_start():
    """The initializer sleeps longer than the item timeout: items still succeed, because a
    worker gets items only once it is ready."""
    with TimeoutPool("operator:neg", workers=1, timeout_s=0.5, initializer=f"{__name__}:slow_start") as pool:
        assert pool.map([(1,), (2,)]) == [Outcome(-1), Outcome(-2)]


def test_workers_that_cannot_start_are_an_error_not_a_loop():
    with TimeoutPool("no_such_module_xyz:f", workers=1, timeout_s=1) as pool:
        with pytest.raises(RuntimeError, match="fail to start"):
            pool.map([(1,)])
