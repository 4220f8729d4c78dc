import pytest

from megatron_pacore.pacore.prompts import render_synthesis_prompt, round_messages

HEAD = ("You are given a problem and a list of reference responses. Your job is to analyze these "
        "references and provide your own response.\n\nOriginal Problem:\n")
TAIL = ("\n\nNow, based on the original problem and reference responses above, please provide your "
        "own comprehensive solution.")


def test_empty_reference_list():
    assert render_synthesis_prompt("What is 2+2?", []) == HEAD + "What is 2+2?" + "\n\nReference Responses:\n" + TAIL


def test_one_reference_exact_bytes():
    got = render_synthesis_prompt("P", ["The answer is 4."])
    assert got == HEAD + "P\n\nReference Responses:\n\nReference 1:\nThe answer is 4.\n" + TAIL


def test_many_references_are_numbered_from_one_in_order():
    got = render_synthesis_prompt("P", ["a", "b", "c"])
    assert got == (HEAD + "P\n\nReference Responses:\n"
                   "\nReference 1:\na\n\nReference 2:\nb\n\nReference 3:\nc\n" + TAIL)
    assert got.index("Reference 1:") < got.index("Reference 2:") < got.index("Reference 3:")


def test_unicode_and_trailing_newlines_are_kept_verbatim():
    refs = ["∫ x dx = x²/2 \\boxed{½}\n\n", "  leading spaces", "日本語\n"]
    got = render_synthesis_prompt("Σ problem\n", refs)
    assert "Original Problem:\nΣ problem\n\n\nReference Responses:\n" in got
    assert "\nReference 1:\n∫ x dx = x²/2 \\boxed{½}\n\n\n" in got
    assert "\nReference 2:\n  leading spaces\n" in got
    assert got.endswith("\nReference 3:\n日本語\n\n" + TAIL)


def test_empty_message_set_sends_problem_unchanged():
    chat = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Q"}]
    assert round_messages(chat, "Q", None) is chat


def test_later_rounds_replace_only_last_user_turn_built_from_original_problem():
    chat = [
        {"role": "system", "content": "Be careful."},
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Solve: x+1=2"},
    ]
    out = round_messages(chat, "Solve: x+1=2", ["x=1"])
    assert out[:3] == chat[:3]
    assert out[3] == {"role": "user", "content": render_synthesis_prompt("Solve: x+1=2", ["x=1"])}
    assert chat[3]["content"] == "Solve: x+1=2"  # the input chat is not mutated


def test_chat_without_user_turn_is_an_error():
    with pytest.raises(ValueError, match="no user turn"):
        round_messages([{"role": "system", "content": "s"}], "p", ["m"])
