"""The rule cleaner: exact-match over the labelled corpus, zero changes to clean text, seam repair,
the fast path's equivalence with the full analysis, config, and edge cases.

Bars (asserted): exact match on degenerate cases >= 95%; clean cases come back unchanged (the same
string, changed=False, no reasons) with no exception; every expected output is a fixed point.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from cai_core.cleaning.rule import CleanOutcome, RuleCleanConfig, apply_edits, remove_spans, repair_mojibake, rule_clean
from cai_core.errors import ConfigError
from cai_core.metrics.detectors import EDIT_CODES, EMOJI, MOJIBAKE, DetectorConfig, Finding

CORPUS = Path(__file__).parents[1] / "data" / "cleaning_corpus.jsonl"
EXACT_MATCH_BAR = 0.95
FULL = RuleCleanConfig(fast_path=False)


def load_corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------- corpus


def test_exact_match_on_degenerate_cases():
    rows = [r for r in load_corpus() if r["kind"] == "degenerate"]
    misses = []
    reasons_agree = 0
    for r in rows:
        out = rule_clean(r["text"], r["prompt"])
        if out.text != r["expected"]:
            misses.append((r["id"], out.text, r["expected"]))
        assert out.changed, r["id"]
        reasons_agree += sorted(out.reasons) == sorted(r["reasons"])
    rate = 1 - len(misses) / len(rows)
    print(f"\nrule exact match on degenerate cases: {len(rows) - len(misses)}/{len(rows)} = {rate:.3f} "
          f"(bar {EXACT_MATCH_BAR}); reasons equal to the labels: {reasons_agree}/{len(rows)}")
    for case_id, got, want in misses:
        print(f"  MISS {case_id}\n    got:  {got!r}\n    want: {want!r}")
    assert rate >= EXACT_MATCH_BAR
    assert reasons_agree / len(rows) >= EXACT_MATCH_BAR


def test_zero_changes_on_clean_cases():
    rows = [r for r in load_corpus() if r["kind"] == "clean"]
    changed = []
    for r in rows:
        out = rule_clean(r["text"], r["prompt"])
        if out.changed or out.text is not r["text"] or out.reasons:
            changed.append((r["id"], out))
    print(f"\nclean cases changed: {len(changed)}/{len(rows)}")
    assert changed == []


def test_expected_outputs_are_fixed_points():
    for r in load_corpus():
        out = rule_clean(r["expected"], r["prompt"])
        assert not out.changed and out.text == r["expected"], r["id"]


def test_reasons_are_edit_codes_in_a_stable_order():
    for r in load_corpus():
        out = rule_clean(r["text"], r["prompt"])
        assert list(out.reasons) == [c for c in EDIT_CODES if c in out.reasons]
        assert len(set(out.reasons)) == len(out.reasons)


# --------------------------------------------------------------------------- fast path


def _fuzz(n: int, seed: int) -> list[tuple[str | None, str]]:
    rng = random.Random(seed)
    parts = ["The plan works well.", "The plan works well.", "Check the logs first!", "Stir it well now.",
             "I hope this helps!", "Hope that helps.", "Let me know if you have any other questions.",
             "Have a great day!", "Take care!", "Best regards,", "Alex", "Thanks!", "Go slow.", "Start slow.",
             "Use e.g. a timer.", "Version 2.0 is out.", '"Quoted. Quoted."', "It’s fine — really.",
             "- list item", "2. second step", "```", "x = 1", "| a | b |", "> a quote", "# Title",
             "and then the", "also this,", "😊", ":)", "Привет", "東京です。", "ありがとう", "café crème.",
             "Ünïcödé wörds here.", "done\u00a0now.", "\ud83d", "\x00", "cafÃ©.", "Itâ€™s fine.", "ÂÂ", "Ã",
             "ðŸ˜Š", "â€?", "   ", ""]
    prompts = [None, "How does it work?", "日本語で答えて", "Write a poem about rain", "Réponds en français"]
    out = []
    for _ in range(n):
        text = "".join(rng.choice(parts) + rng.choice([" ", "\n", "\n\n", "  ", ""]) for _ in range(rng.randint(1, 10)))
        out.append((rng.choice(prompts), text.rstrip() if rng.random() < 0.6 else text))
    return out


def test_fast_path_gives_the_same_result_as_the_full_analysis():
    cases = [(r["prompt"], r["text"]) for r in load_corpus()] + _fuzz(2500, seed=3)
    for prompt, text in cases:
        assert rule_clean(text, prompt) == rule_clean(text, prompt, FULL), repr(text)


def test_clean_text_comes_back_as_the_same_object():
    text = "A perfectly ordinary answer. It has two sentences."
    out = rule_clean(text)
    assert out == CleanOutcome(text, False, ()) and out.text is text
    assert rule_clean(text, cfg=FULL).text is text


# --------------------------------------------------------------------------- what must survive


@pytest.mark.parametrize("text,prompt", [
    ("```python\nfor i in range(3):\n    print('hi')\n    print('hi')\n```", "Print hi twice"),
    ("1. Mix.\n2. Mix.\n3. Mix again.", "Steps?"),
    ("- eggs\n- eggs\n- milk", "Shopping list"),
    ("Twinkle, twinkle, little star\nhow I wonder what you are\ntwinkle, twinkle, little star", None),
    ("She said, \"No. No. No.\" Then she left the room.", "What happened?"),
    ("That is very very important: 7, 7 and 7 again.", "Is it important?"),
    ("| x | y |\n|---|---|\n| 1 | 1 |\n| 1 | 1 |", "Table please"),
    ("Oui, c'est exact. La réponse est quarante-deux.", "Est-ce exact ?"),
    ("Ja, das stimmt. Die Antwort ist zweiundvierzig.", "Stimmt das?"),
    ("はい、そうです。答えは四十二です。", "本当ですか？"),
    ("**Bold** and _italic_ with a [link](https://example.com/a_b).", "Markdown?"),
    ("Run `rm -rf build/` first. Then run `make`.", "How to rebuild?"),
])
def test_legitimate_repetition_and_languages_survive(text, prompt):
    out = rule_clean(text, prompt)
    assert out.text == text and not out.changed, out


def test_fix_subset_only_fixes_those_codes():
    text = "Nice work! 😊 Have a great day! Have a great day!"
    only_emoji = RuleCleanConfig(fix=(EMOJI,))
    out = rule_clean(text, cfg=only_emoji)
    assert out.text == "Nice work! Have a great day! Have a great day!" and out.reasons == (EMOJI,)
    assert rule_clean(text).text == "Nice work! Have a great day!"


def test_gopher_alone_never_rewrites():
    # a repetitive but legitimate list trips Gopher statistics, which are reported, not fixed
    text = "\n".join(f"- Item {i}: check the value and record the value" for i in range(12))
    out = rule_clean(text)
    assert not out.changed


# --------------------------------------------------------------------------- seams


@pytest.mark.parametrize("text,spans,expected", [
    ("Great day 😊!", [(10, 11)], "Great day!"),
    ("Hello, 😊, world.", [(7, 8)], "Hello, world."),
    ("Study hard. 加油!", [(12, 14)], "Study hard."),
    ("Great choice!😊Let me explain.", [(13, 14)], "Great choice! Let me explain."),
    ("importantпример for you", [(9, 15)], "important for you"),
    ("abcпримерdef", [(3, 9)], "abc def"),
    ("Steep it (🍵) in hot water.", [(10, 11)], "Steep it in hot water."),
    ("A.\nDup.\nC.", [(3, 7)], "A.\nC."),
    ("A.\n\nDup.\n\nC.", [(4, 8)], "A.\n\nC."),
    ("A. Dup. C.", [(3, 7)], "A. C."),
    ("A. Dup.\n", [(3, 7)], "A.\n"),
    ("😊 Sure!", [(0, 1)], "Sure!"),
    ("- item 💧\n- next", [(7, 8)], "- item\n- next"),
    ("foo.\n  😊 bar", [(7, 8)], "foo.\n  bar"),
    ("A.\r\nDup.\r\nC.", [(4, 8)], "A.\r\nC."),
    ("all gone", [(0, 8)], ""),
])
def test_remove_spans_repairs_seams(text, spans, expected):
    assert remove_spans(text, spans) == expected


def test_remove_spans_merges_overlaps_and_whitespace_gaps():
    text = "Keep. A. A. A. Done."
    assert remove_spans(text, [(12, 14), (9, 11), (10, 11)]) == "Keep. A. Done."
    assert remove_spans("abc", []) == "abc"


# --------------------------------------------------------------------------- mojibake


def test_mojibake_is_repaired_first_and_the_other_rules_judge_the_repaired_text():
    assert rule_clean("Great job ðŸ˜Š") == CleanOutcome("Great job", True, (EMOJI, MOJIBAKE))
    looping = "Letâ€™s check the filter first today. " * 3
    assert rule_clean(looping.strip()) == CleanOutcome("Let’s check the filter first today.", True,
                                                       ("repeated_sentence", MOJIBAKE))
    assert rule_clean("The cafÃ© is open.", cfg=FULL) == rule_clean("The cafÃ© is open.")


def test_mojibake_is_left_alone_unless_fixed_and_enabled():
    text = "The cafÃ© is open 😊"
    assert rule_clean(text, cfg=RuleCleanConfig(fix=(EMOJI,))).text == "The cafÃ© is open"
    no_detector = RuleCleanConfig(detector=DetectorConfig(enabled=(EMOJI,)))
    assert rule_clean(text, cfg=no_detector).text == "The cafÃ© is open"
    assert rule_clean(text).text == "The café is open"


def test_apply_edits_replaces_and_removes():
    text = "The cafÃ© is nice 😊 today."
    found = [Finding(MOJIBAKE, (7, 9), "", "é"), Finding(EMOJI, (18, 19), ""),
             Finding(EMOJI, (8, 9), "")]  # a removal inside a replacement is dropped
    assert apply_edits(text, found) == "The café is nice today."
    assert apply_edits(text, [Finding(EMOJI, (18, 19), "")]) == remove_spans(text, [(18, 19)])


def test_repair_mojibake_changes_nothing_else():
    assert repair_mojibake("Itâ€™s fine ðŸ˜Š. Itâ€™s fine ðŸ˜Š.") == "It’s fine 😊. It’s fine 😊."
    text = "Correct text 😊, said twice. Correct text 😊, said twice."
    assert repair_mojibake(text) is text


# --------------------------------------------------------------------------- config and types


def test_config():
    cfg = RuleCleanConfig.from_dict({"fix": ["emoji"], "fast_path": False, "detector": {"max_signoffs": 2}})
    assert cfg.fix == ("emoji",) and cfg.detector.max_signoffs == 2
    with pytest.raises(ConfigError, match="fix"):
        RuleCleanConfig(fix=("smileys",))
    with pytest.raises(ConfigError, match="detector.max_signoffs"):
        RuleCleanConfig.from_dict({"detector": {"max_signoffs": -1}})
    assert RuleCleanConfig.from_json(RuleCleanConfig().to_json()) == RuleCleanConfig()


def test_outcome_is_frozen_and_types_are_checked():
    out = rule_clean("Hi 😊")
    with pytest.raises(Exception):
        out.text = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        rule_clean(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rule_clean(b"bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("text", ["", " ", "\n", " \t\n\n  "])
def test_empty_and_whitespace_only(text):
    out = rule_clean(text)
    assert out == CleanOutcome(text, False, ())


def test_mixed_scripts():
    prompt = "What is the capital of Japan?"
    text = "The capital of Japan is Tokyo (東京). It is very large."
    assert rule_clean(text, "How do you write Tokyo in Japanese?").text == text
    assert rule_clean(text, prompt).text == "The capital of Japan is Tokyo. It is very large."


def test_invalid_surrogates_are_removed_and_the_result_encodes():
    text = "The answer is 42.\ud83d Douglas Adams. \udc00Done."
    out = rule_clean(text, "What is the answer?")
    assert out.text == "The answer is 42. Douglas Adams. Done."
    assert out.reasons == ("invalid_char",)
    out.text.encode("utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["loop", "lines", "prose", "emoji"])
def test_ten_megabytes_is_fast(kind):
    mb = 10 * 1024 * 1024
    if kind == "loop":
        text = "Here is the answer. " + "Let me know if you have any questions! " * (mb // 39)
        want = "Here is the answer. Let me know if you have any questions! "
    elif kind == "lines":
        text = "Same line here.\n" * (mb // 16)
        want = "Same line here.\n"
    elif kind == "emoji":
        text = "Hi there. " + "😊" * (mb // 4)
        want = "Hi there."
    else:
        rng = random.Random(2)
        words = "river stone light paper window garden signal method record theory market winter".split()
        text = "".join(" ".join(rng.choice(words) for _ in range(12)).capitalize() + ". " for _ in range(mb // 80))
        want = None
    t0 = time.perf_counter()
    out = rule_clean(text)
    elapsed = time.perf_counter() - t0
    print(f"\nrule_clean on 10 MB ({kind}): {elapsed:.2f}s -> {len(out.text)} chars, {out.reasons}")
    # a loose bound that a loaded shared CPU cannot reach (typically 1-2 s); it fails a quadratic blow-up, which
    # takes minutes on 10 MB. The throughput figure itself is benchmarks/clean_throughput.py's.
    assert elapsed < 60.0
    if want is not None:
        assert out.text == want


@pytest.mark.parametrize("blank", ["\x0b", "\xa0", "\u3000", "\x0c"])
def test_a_line_of_odd_whitespace_is_a_blank_line(blank):
    text = f"Roses are red\n{blank}\nviolets are blue\nsugar is sweet\nand so are you"
    out = rule_clean(text, "Write a poem.")  # used to raise IndexError in the verse check
    assert [line for line in out.text.split("\n") if line.strip()] == [line for line in text.split("\n") if line.strip()]
    assert set(out.reasons) <= {"invalid_char"}
    assert rule_clean(text, "Write a poem.", RuleCleanConfig(fast_path=False)) == out
