from megatron_pacore.pacore.compaction import compact, compact_bounded


def test_text_after_last_think_end_unchanged():
    assert compact("<think>a</think>b</think>\n\nThe answer is \\boxed{4}. ") == "\n\nThe answer is \\boxed{4}. "


def test_no_think_end_keeps_whole_text():
    assert compact("  just an answer \n") == "  just an answer \n"
    assert compact("<think>unfinished") == "<think>unfinished"


def test_think_end_at_the_very_end_gives_empty_message():
    assert compact("<think>x</think>") == ""


def test_bound_off_by_default():
    c = compact_bounded("</think>" + "w " * 1000)
    assert c.truncated_chars == 0 and len(c.message) == 2000


def test_bound_keeps_tail_and_records_cut_with_tokenizer():
    tokens = list("abcdefghij")
    c = compact_bounded("think</think>abcdefghij", 4, tokenize=list, detokenize="".join)
    assert c.message == "ghij"
    assert c.truncated_chars == 6
    assert tokens[-4:] == list(c.message)


def test_bound_without_tokenizer_counts_words():
    c = compact_bounded("one two three four five", 2)
    assert c.message == "four five"
    assert c.truncated_chars == len("one two three ")


def test_short_message_not_cut():
    assert compact_bounded("a b", 5).truncated_chars == 0

