"""Colocated rollout: a TP=2 Megatron actor and a TP=2 vLLM engine (external launcher) in the
same two processes. After a sync (the per-rank path, and the gather path) every engine weight
equals the actor's and the log-probs agree; after an update they disagree until the next
sync; a tensor held back from the sync is named by check_weights. One worker run does all of
it (tests/distributed/worker_rollout_sync.py)."""
import pytest

from dist_launch import run_workers

pytestmark = pytest.mark.vllm

HELD_BACK = "model.layers.1.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def synced(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rollout_sync")
    # Megatron's vocabulary padded to a multiple of 2 (1002 rows, 501 per rank) while vLLM
    # splits at 512: the per-rank path must move rows between the ranks.
    return run_workers("worker_rollout_sync.py", ["--model", str(tiny_model), "--vocab-divisible-by", "1"],
                       tmp / "result.json", nproc=2, timeout=500)


def test_check_weights_passes_after_a_sync_reading_back_the_prepacked_gemms(synced):
    for key in ("check1", "check2", "check3"):
        c = synced[key]
        assert c["ok"], c
        assert c["tensors"] == synced["sync1"]["tensors"]
        assert c["method"] == "gemm-probe"
    assert synced["sync2"]["path"] == "gather" and synced["sync2"]["buckets"] > 1
    assert synced["sync2"]["tensors"] == synced["sync1"]["tensors"]


def test_colocated_sync_takes_the_per_rank_path_and_moves_only_the_ranks_slices(synced):
    """Same TP, same processes: no gather (half the bytes of the gather path at TP=2, plus
    the embedding rows re-sliced), exact after the gather path and vLLM's reload too."""
    assert synced["padded_vocab"] == 1002, synced
    for key in ("sync1", "sync3"):
        s = synced[key]
        assert s["path"] == "rank-shards" and s["buckets"] == 0, s
        assert s["tensors"] == synced["sync2"]["tensors"]
        assert s["bytes"] < 0.6 * synced["sync2"]["bytes"], (s, synced["sync2"])
    assert synced["fixed3"] <= 2e-5, synced
    assert synced["sync_held_back"]["path"] == "gather"
    assert "rank_shards=True needs the ActorExport" in synced["forced_on_a_stream"], synced


def test_vllm_logprobs_of_a_fixed_sequence_match_megatron_after_each_sync(synced):
    assert synced["fixed1"] <= 2e-5, synced
    assert synced["fixed2"] <= 2e-5, synced


def test_sampled_token_logprobs_match_megatron_and_ranks_sample_alike(synced):
    assert synced["samples"] == 3 * 2
    assert synced["order"] == [[i, j] for i in range(3) for j in range(2)]
    assert synced["sampled_tokens"] == 3 * 2 * 16 and synced["finish_reasons"] == ["length"]
    assert synced["sampled1"] <= 1e-4, synced
    assert synced["ranks_agree"]


def test_engine_disagrees_with_the_actor_until_synced(synced):
    # Before the first sync, and after an update before the re-sync, outputs differ ...
    assert synced["unsynced_vs_actor"] > 1e-3, synced
    assert synced["stale_vs_actor"] > 1e-3, synced
    # ... and the weight check says so, naming a tensor and its difference.
    for key in ("unsynced_check", "stale_check"):
        c = synced[key]
        assert not c["ok"] and "differs from the actor's: max |diff|" in c["error"], c
    # The update alone did not reach the engine (no weight shares the actor's memory) ...
    assert synced["engine_after_update"] == 0.0, synced
    # ... and the re-sync moved the engine's outputs.
    assert synced["moved"] > 1e-3, synced


def test_check_weights_names_a_tensor_that_was_not_synced(synced):
    c = synced["held_back_check"]
    assert not c["ok"], c
    assert HELD_BACK in c["error"] and "max |diff|" in c["error"], c


def test_check_weights_reads_the_tied_lm_head_gemm_and_sees_it_stale_without_reprocessing(synced):
    c = synced["stale_lm_head_check"]
    assert not c["ok"], c
    assert "engine lm_head.weight [prepacked GEMM" in c["error"], c


def test_bad_requests_are_refused_before_touching_the_engine(synced):
    assert "prompt 0 has 300 tokens" in synced["too_long"], synced
    assert "torch.bfloat16, the engine is torch.float32" in synced["wrong_dtype"], synced
    # The refused sync left the engine's weights as they were.
    assert synced["fixed_after_refusal"] <= 2e-5, synced


@pytest.fixture(scope="module")
def synced_qwen2(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rollout_sync_qwen2")
    # Vocabulary rows split unlike vLLM's here too: the untied lm_head is re-sliced as well.
    return run_workers("worker_rollout_sync.py", ["--model", str(tiny_models["qwen2"]), "--quick",
                                                  "--vocab-divisible-by", "1"],
                       tmp / "result.json", nproc=2, timeout=500)


def test_untied_model_with_qkv_bias_syncs_exactly(synced_qwen2):
    """Qwen2: q/k/v biases and an lm_head of its own (read back through its GEMM), through
    the per-rank path with both vocabulary tables re-sliced between the ranks."""
    r = synced_qwen2
    assert r["padded_vocab"] == 1002, r
    assert not r["unsynced_check"]["ok"], r
    assert r["sync1"]["path"] == "rank-shards", r
    assert r["check1"]["ok"] and r["check1"]["tensors"] == r["sync1"]["tensors"], r
    assert r["fixed1"] <= 2e-5, r
