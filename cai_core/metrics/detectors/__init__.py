"""Degeneration detectors: what is wrong with a generated text, where, and why.

`detect(text, prompt=None, cfg=DetectorConfig())` returns a list of `Finding`
(code, span, detail, replacement) in text order. The code is a stable reason
code from the table below; the span is the ``(start, end)`` character range a
cleaner would edit, or None when the finding is about the text as a whole
(nothing to cut); the replacement is what takes the span's place (empty, for
every code but ``mojibake``: the span is removed).
Consecutive sentences flagged with the same code are one finding whose
span covers the run. The rule cleaner (`cai_core.cleaning.rule`) edits
exactly the spans found here and nothing else.

==========================  ==================================================
code                        meaning (span)
==========================  ==================================================
``repeated_sentence``       a block of prose sentences repeated back to back
                            (a loop; the block has `min_loop_words` words or
                            more), a sentence of `min_repeat_words` words or
                            more that repeats an earlier one where the text
                            ends in such repeats (a looping tail), or a
                            sentence of `min_far_repeat_words` words or more
                            repeated anywhere; span: the later copies
``repeated_pleasantry``     a closing pleasantry ("I hope this helps!", "Let
                            me know if you have any other questions.", "Have a
                            great day!") said before: word for word anywhere,
                            or of the same kind within the closing block (the
                            run of pleasantries and sign-offs that ends the
                            text); span: the later ones
``signoff_pileup``          more than `max_signoffs` different closings in
                            the closing block, counting its sign-offs and,
                            once one is kept, every other kind of closing
                            after it ("Take care! Goodbye! Best regards,",
                            "Have a great day! Let me know if you need
                            anything else!"); span: the extra ones (and a
                            name line under them)
``emoji``                   an emoji or an emoticon, or a run of them
                            ("😊😊😊", ":) :)"); span: the run
``foreign_script``          letters of a script that is not a target script:
                            the prompt's scripts (the text's own when there is
                            no prompt), Latin always, Greek in runs of at most
                            `max_greek_run` letters (math), and the scripts of
                            languages the prompt names; span: the stray run,
                            or None when the answer is mostly in that script
                            (a wrong-language answer is not stray characters)
``truncated_fragment``      the text stops mid-sentence (generation hit the
                            token limit): it ends on a comma or dash, a word
                            that cannot end a sentence, a prefix of an
                            earlier sentence, or an unpunctuated clause after
                            a complete sentence of its paragraph; span: the
                            fragment, or None when nothing precedes it
``invalid_char``            a lone surrogate, U+FFFD, U+FFFE/U+FFFF or a
                            control character other than tab/newline/CR (it
                            cannot be written as UTF-8 or is decoding debris);
                            span: the run
``mojibake``                text decoded with the wrong codec (UTF-8 read as
                            Latin-1 or cp1252, once or more: ``cafÃ©``,
                            ``doesnâ€™t``, ``Ã¯Â»Â¿``) in a line outside code
                            and URLs; span: the garbled run, with the text
                            ftfy decodes it to as the finding's replacement,
                            or an empty replacement (remove it) for what does
                            not decode: ``Â``/``Ã`` debris, lossy sequences,
                            byte-order marks
``gopher_<stat>``           a Gopher repetition statistic above its threshold
                            (`GOPHER_CODES`, see `GopherThresholds`); span:
                            None; reported only, never cleaned
==========================  ==================================================

Sentences: a prose line is cut after a run of ``. ! ? …`` (with closing quotes
or brackets) followed by a space or the end of the line, and after a CJK full
stop anywhere; a newline always ends a sentence. Sentences are compared by
`sentence_key` (lower-cased, outer punctuation stripped, whitespace collapsed).

Gopher statistics (`gopher_stats`), all in [0, 1]:

* ``dup_line_frac`` / ``dup_para_frac``: share of lines (paragraphs) that are
  copies of an earlier one; ``dup_line_chars`` / ``dup_para_chars``: share of
  their characters in such copies. Lines are stripped and empty ones dropped;
  paragraphs are separated by blank lines.
* ``top_<n>gram`` (n = 2, 3, 4): characters of the most frequent word n-gram
  (the longest of them on a tie) times its count, over all word characters (0
  when no n-gram repeats).
* ``dup_<n>gram`` (n = 5..10): share of word characters covered by n-grams
  that occur more than once (every occurrence counts, overlaps once).

Words are the ``\\w+`` runs of the lower-cased text; character shares count
word characters only, so whitespace and punctuation do not dilute them.

Where a rule cannot tell degeneration from legitimate repetition it leaves the
text alone: code (fenced or indented), tables, lists, headings, block quotes,
quoted speech and verse (a poem or song's refrain, or anything answering a
prompt that asks for a poem, a song or a repetition) are never
sentence-deduplicated, and code, tables, inline code and URLs are never
touched at all.

Speed: `nothing_to_fix` is a cheap pre-check that proves a text has nothing a
cleaner could edit (most texts); inside the analysis the same checks skip the
sentence rules where they cannot fire. ``exhaustive=True`` turns every such
shortcut off (same findings, slower; the tests hold the two equal).
"""
from cai_core.metrics.detectors.api import detect, edit_findings, nothing_to_fix, prechecked_edit_findings
from cai_core.metrics.detectors.characters import script_of
from cai_core.metrics.detectors.codes import (
    ALL_CODES,
    DETECTOR_NAMES,
    EDIT_CODES,
    EMOJI,
    FOREIGN_SCRIPT,
    GOPHER_CODES,
    GOPHER_STATS,
    INVALID_CHAR,
    MOJIBAKE,
    REPEATED_PLEASANTRY,
    REPEATED_SENTENCE,
    SIGNOFF_PILEUP,
    TRUNCATED_FRAGMENT,
    Finding,
)
from cai_core.metrics.detectors.configs import DetectorConfig, GopherThresholds
from cai_core.metrics.detectors.gopher import gopher_findings, gopher_stats
from cai_core.metrics.detectors.markdown import BLANK, CODE, HEADING, LIST, PROSE, QUOTE, RULE, TABLE
from cai_core.metrics.detectors.scripts import target_scripts
from cai_core.metrics.detectors.sentences import COMPLETE_END, closing_kind, is_signoff, sentence_ends, sentence_key

__all__ = [
    "ALL_CODES",
    "BLANK",
    "CODE",
    "COMPLETE_END",
    "DETECTOR_NAMES",
    "DetectorConfig",
    "EDIT_CODES",
    "EMOJI",
    "FOREIGN_SCRIPT",
    "Finding",
    "GOPHER_CODES",
    "GOPHER_STATS",
    "GopherThresholds",
    "HEADING",
    "INVALID_CHAR",
    "LIST",
    "MOJIBAKE",
    "PROSE",
    "QUOTE",
    "REPEATED_PLEASANTRY",
    "REPEATED_SENTENCE",
    "RULE",
    "SIGNOFF_PILEUP",
    "TABLE",
    "TRUNCATED_FRAGMENT",
    "closing_kind",
    "detect",
    "edit_findings",
    "gopher_findings",
    "gopher_stats",
    "is_signoff",
    "nothing_to_fix",
    "prechecked_edit_findings",
    "script_of",
    "sentence_ends",
    "sentence_key",
    "target_scripts",
]
