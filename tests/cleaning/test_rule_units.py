"""cleaning.rule's seams, case by case: what the text looks like where something was cut out of it (emptied
brackets glued to a word, orphaned punctuation before a paragraph break, an emoji glued between two words), and
removals separated only by whitespace cut as one."""
from __future__ import annotations

import pytest

from cai_core.cleaning.rule import remove_spans, rule_clean

SMILE, PARTY = "\U0001F600", "\U0001F389"


@pytest.mark.parametrize("text, expected", [
    (f"Call it now({SMILE}) please.", "Call it now please."),  # emptied brackets glued to the word before
    (f"Call it now ({SMILE}) please.", "Call it now please."),
    (f"Great job! {PARTY}!\n\nNext paragraph here.", "Great job!\n\nNext paragraph here."),  # the break stays
    (f"Great job! {PARTY}!\r\n\r\nNext paragraph here.", "Great job!\r\n\r\nNext paragraph here."),
    (f"Great job! {PARTY}!\nNext line here.", "Great job!\nNext line here."),
    (f"I{SMILE}love this plan.", "I love this plan."),  # words that the emoji held apart stay apart
    (f"I'm{SMILE}happy with it.", "I'm happy with it."),
    (f"Done.{SMILE}Next step now.", "Done. Next step now."),
])
def test_the_seam_reads_as_if_the_emoji_was_never_there(text, expected):
    out = rule_clean(text, "Say hi")
    assert out.text == expected and out.changed and out.reasons == ("emoji",)


def test_ranges_separated_only_by_whitespace_are_cut_as_one():
    # the second and third range touch across a line break: one cut, the break goes with them
    assert remove_spans("x (a) y (b)\n(c) z", [(2, 5), (8, 11), (12, 15)]) == "x y z"
    text = f"Fine. {SMILE} Done {SMILE}\n{SMILE} end."
    assert remove_spans(text, [(6, 7), (13, 14), (15, 16)]) == "Fine. Done end."
    # text between two ranges keeps them apart, and so keeps the line break
    assert remove_spans("x (a) y (b)\nw (c) z", [(2, 5), (8, 11), (14, 17)]) == "x y\nw z"
