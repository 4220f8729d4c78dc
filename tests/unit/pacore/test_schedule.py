import pytest

from megatron_pacore.pacore.schedule import RoundSchedule


@pytest.mark.parametrize("level,widths", [("low", (4, 1)), ("medium", (16, 1)), ("high", (32, 4, 1))])
def test_levels_match_the_paper(level, widths):
    assert RoundSchedule.from_level(level).widths == widths


def test_widths_string_gets_final_width_one_appended():
    s = RoundSchedule.from_widths("32,4")
    assert s.widths == (32, 4, 1)
    assert s.num_rounds == 3
    assert s.total_trajectories == 37
    assert str(s) == "32,4,1"


def test_widths_accept_spaces_and_lists():
    assert RoundSchedule.from_widths(" 8 , 2 ").widths == (8, 2, 1)
    assert RoundSchedule.from_widths([3]).widths == (3, 1)


@pytest.mark.parametrize("bad,why", [
    ("", "comma-separated"),
    ("4,,2", "comma-separated"),
    ("a,b", "comma-separated"),
    ("0", "positive"),
    ("-3", "positive"),
    ("4.5", "comma-separated"),
])
def test_invalid_widths_say_why(bad, why):
    with pytest.raises(ValueError, match=why):
        RoundSchedule.from_widths(bad)


def test_unknown_level_names_the_choices():
    with pytest.raises(ValueError, match="high.*low.*medium"):
        RoundSchedule.from_level("extreme")


def test_direct_schedule_must_end_with_width_one():
    with pytest.raises(ValueError, match="final round must have width 1"):
        RoundSchedule((4, 2))
    with pytest.raises(ValueError, match="positive integer"):
        RoundSchedule((4, True, 1))
