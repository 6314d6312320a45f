"""Settings of the detectors: `DetectorConfig` and the Gopher thresholds."""
from __future__ import annotations

from dataclasses import dataclass, field

from cai_core.config.base import ConfigBase, require
from cai_core.metrics.detectors.codes import DETECTOR_NAMES, GOPHER_STATS


@dataclass(frozen=True)
class GopherThresholds(ConfigBase):
    """Gopher (MassiveText) repetition thresholds; a statistic above its threshold is reported."""

    #: Share of lines that repeat an earlier line.
    dup_line_frac: float = 0.30
    #: Share of paragraphs that repeat an earlier paragraph.
    dup_para_frac: float = 0.30
    #: Share of line characters inside repeated lines.
    dup_line_chars: float = 0.20
    #: Share of paragraph characters inside repeated paragraphs.
    dup_para_chars: float = 0.20
    #: Character share of the most frequent word 2-gram.
    top_2gram: float = 0.20
    #: Character share of the most frequent word 3-gram.
    top_3gram: float = 0.18
    #: Character share of the most frequent word 4-gram.
    top_4gram: float = 0.16
    #: Character share covered by repeated word 5-grams.
    dup_5gram: float = 0.15
    #: Character share covered by repeated word 6-grams.
    dup_6gram: float = 0.14
    #: Character share covered by repeated word 7-grams.
    dup_7gram: float = 0.13
    #: Character share covered by repeated word 8-grams.
    dup_8gram: float = 0.12
    #: Character share covered by repeated word 9-grams.
    dup_9gram: float = 0.11
    #: Character share covered by repeated word 10-grams.
    dup_10gram: float = 0.10
    #: Texts with fewer words are not judged (the statistics are meaningless on a few words).
    min_words: int = 50
    #: Only the first this many characters are measured (the shares are estimates beyond it).
    max_chars: int = 200_000

    def validate(self) -> None:
        for name in GOPHER_STATS:
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value}")
        require(self.min_words >= 0, "min_words", f"must be >= 0, got {self.min_words}")
        require(self.max_chars >= 1, "max_chars", f"must be >= 1, got {self.max_chars}")


@dataclass(frozen=True)
class DetectorConfig(ConfigBase):
    """Settings of the degeneration detectors."""

    #: Detectors to run, by reason code; "gopher" runs all the Gopher statistics.
    enabled: tuple[str, ...] = DETECTOR_NAMES
    #: Words a sentence needs to count as repeated where the text ends in repeats (a looping tail).
    min_repeat_words: int = 4
    #: A sentence repeated neither back to back nor in the text's looping tail counts only with this many words.
    min_far_repeat_words: int = 8
    #: A block of sentences repeated back to back counts as a loop when the block has this many words.
    min_loop_words: int = 3
    #: Longest block of sentences (in sentences) looked for as a back-to-back loop.
    max_loop_period: int = 8
    #: Closings kept in the closing block, counting sign-offs and any other closing after a kept one;
    #: further different ones are a pile-up.
    max_signoffs: int = 1
    #: An unpunctuated final fragment with no other sign of truncation needs this many words.
    min_fragment_words: int = 3
    #: A script is a target script when it has at least this share of the prompt's letters.
    script_share: float = 0.15
    #: Above this share of the text's letters a foreign script is a wrong-language answer, not stray characters.
    max_stray_share: float = 0.30
    #: Greek runs up to this many letters are math symbols (theta, pi, delta x), not stray text.
    max_greek_run: int = 2
    #: Thresholds of the Gopher repetition statistics.
    gopher: GopherThresholds = field(default_factory=GopherThresholds)

    def validate(self) -> None:
        unknown = [d for d in self.enabled if d not in DETECTOR_NAMES]
        require(not unknown, "enabled", f"unknown detector(s) {unknown}; known: {', '.join(DETECTOR_NAMES)}")
        require(self.min_repeat_words >= 1, "min_repeat_words", f"must be >= 1, got {self.min_repeat_words}")
        require(self.min_far_repeat_words >= self.min_repeat_words, "min_far_repeat_words",
                f"must be >= min_repeat_words ({self.min_repeat_words}), got {self.min_far_repeat_words}")
        require(self.min_loop_words >= 1, "min_loop_words", f"must be >= 1, got {self.min_loop_words}")
        require(1 <= self.max_loop_period <= 64, "max_loop_period", f"must be in [1, 64], got {self.max_loop_period}")
        require(self.max_signoffs >= 0, "max_signoffs", f"must be >= 0, got {self.max_signoffs}")
        require(self.min_fragment_words >= 1, "min_fragment_words", f"must be >= 1, got {self.min_fragment_words}")
        require(0.0 < self.script_share <= 1.0, "script_share", f"must be in (0, 1], got {self.script_share}")
        require(0.0 < self.max_stray_share <= 1.0, "max_stray_share", f"must be in (0, 1], got {self.max_stray_share}")
        require(self.max_greek_run >= 0, "max_greek_run", f"must be >= 0, got {self.max_greek_run}")
