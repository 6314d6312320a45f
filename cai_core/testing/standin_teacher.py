"""STAND-IN TEACHER: a deterministic fake of a teacher model, for offline tests and benchmarks.

THIS IS NOT A LANGUAGE MODEL and its numbers say nothing about any real model. It
implements the `ChatModel` protocol with a handful of hand-written text features, so
that constitution discovery (`cai_core.stages.discover`) and the judge stage can run
end to end without a network, a GPU or model weights:

* features it knows: emoji, length (word count), refusal phrases, bulleted lists, and
  shouting (exclamation marks and ALL-CAPS words);
* asked to *propose principles* (discover's proposal prompt), it compares the PREFERRED
  and OTHER answers on those features and writes one principle per feature that differs,
  in the direction the preferred answer takes (wording varied deterministically per
  pair), then a vague decoy principle no feature backs ("... addresses the request more
  directly"); `unparsed_every=N` makes every N-th pair's reply unparseable prose;
* asked to *judge* (the judge stage's A/B prompt), it reads the principle(s) by keywords
  (``emoji``, ``shorter``/``concise``, ``refuse``/``harmful``, ``list``/``bullet``,
  ``shouting``/``exclamation``, with simple polarity cues such as "without" or "instead
  of refusing"), lets every recognised feature that differs between the options vote,
  and answers: logprobs ``[2.5 * votes, 0]`` for A/B (no vote: 0.5, i.e. undecided); a
  letter reply "A"/"B" (no vote: "A", a position bias, so both orders disagree);
* asked to *summarise* a cluster, it returns the first (most central) member;
* anything else gets a fixed placeholder reply.

Same input, same output, in every process.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from cai_core.llm.base import Message, Sampling

STANDIN_NAME = "standin-teacher (deterministic stand-in, not a model)"
PLACEHOLDER = "(stand-in teacher: no reply for this kind of prompt)"

_EMOJI = re.compile("[\U0001F300-\U0001FAFF\U00002600-\U000027BF\U0001F000-\U0001F2FF]")
_WORDS = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
_REFUSAL = re.compile(r"\b(i can(?:'|no)t|i cannot|i won't|i will not|i'm not able to|i am not able to|"
                      r"i must decline|i'm unable to|i am unable to)\b", re.I)
_BULLET_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d{1,2}[.)])\s+\S", re.M)
_CAPS = re.compile(r"\b[A-Z]{3,}\b")
_NEGATION = re.compile(r"\b(no|not|without|avoid\w*|fewer|free of|less|never|calm\w*|measured|restrained)\b", re.I)

_JUDGE = re.compile(r"Request:\n<<<\n(.*?)\n>>>\n\n(.*)\n\nOption A:\n<<<\n(.*)\n>>>\n\nOption B:\n<<<\n(.*)\n>>>", re.S)
_PROPOSE = re.compile(r"Request:\n<<<\n(.*?)\n>>>\n\nPREFERRED answer:\n<<<\n(.*)\n>>>\n\nOTHER answer:\n<<<\n(.*)\n>>>", re.S)
_COUNT = re.compile(r"exactly (\d+) lines")


def _h(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:8], 16)


def _words(text: str) -> int:
    return len(_WORDS.findall(text))


@dataclass(frozen=True)
class Feature:
    """A text feature the stand-in can see, how to word it as a principle, and how to recognise it."""

    name: str
    measure: Callable[[str], float]
    relevant: Callable[[float, float], bool]
    prefers_less: bool                    # the main wording prefers the lower measure
    wordings: tuple[str, ...]             # principles preferring the main direction
    opposite: tuple[str, ...]             # principles preferring the other direction
    keywords: tuple[str, ...]             # substrings that mean a principle is about this feature
    reverse: Callable[[str], bool]        # True when a principle about it prefers the other direction


def _lower_unless(pattern: str) -> Callable[[str], bool]:
    rx = re.compile(pattern, re.I)
    return lambda text: bool(rx.search(text))


FEATURES: tuple[Feature, ...] = (
    Feature(
        "emoji", lambda t: float(len(_EMOJI.findall(t))), lambda a, b: a != b, True,
        ("Prefer the response that does not use emoji.",
         "Prefer the response that avoids emoji and emoticons.",
         "Prefer the response with no emoji in it."),
        ("Prefer the response that uses emoji to liven up the text.",),
        ("emoji", "emoticon"),
        lambda text: not _NEGATION.search(text)),
    Feature(
        "length", lambda t: float(_words(t)), lambda a, b: max(a, b) >= 1.3 * max(1.0, min(a, b)), True,
        ("Prefer the shorter response.",
         "Prefer the response that is more concise.",
         "Prefer the response that is brief and to the point."),
        ("Prefer the longer, more detailed response.",),
        ("short", "concise", "brief", "succinct", "to the point", "long", "detailed", "thorough", "elaborat",
         "complete"),
        _lower_unless(r"long|detailed|thorough|elaborat|complete")),
    Feature(
        "refusal", lambda t: 1.0 if _REFUSAL.search(t) else 0.0, lambda a, b: a != b, False,
        ("Prefer the response that declines to help with a harmful request.",
         "Prefer the response that refuses an unsafe request.",
         "Prefer the response that is less harmful and says no to dangerous requests."),
        ("Prefer the response that complies with the request instead of refusing.",),
        ("refus", "declin", "harm", "unsafe", "danger", "safe", "says no"),
        _lower_unless(r"instead of (refusing|declining)|rather than (refusing|declining)|avoids? refusing|"
                      r"without refusing|needless|complies|not refuse")),
    Feature(
        "list", lambda t: float(len(_BULLET_LINE.findall(t))), lambda a, b: min(a, b) == 0 and max(a, b) >= 2, False,
        ("Prefer the response that organises its content as a bulleted list.",
         "Prefer the response that uses a list format.",
         "Prefer the response that presents the items as a list."),
        ("Prefer the response written as flowing prose rather than a list.",),
        ("list", "bullet"),
        _lower_unless(r"prose|rather than a list|instead of a list|without a list|no list|not a list|paragraph")),
    Feature(
        "shouting", lambda t: float(t.count("!") + len(_CAPS.findall(t))), lambda a, b: abs(a - b) >= 2, True,
        ("Prefer the calmer response without shouting or exclamation marks.",
         "Prefer the response that does not use all-caps words or exclamation marks.",
         "Prefer the response with a calm, measured tone."),
        ("Prefer the more enthusiastic response with exclamation marks.",),
        ("shout", "all-caps", "all caps", "capital", "exclamation", "calm", "measured tone", "enthusias"),
        lambda text: not _NEGATION.search(text)),
)
DECOYS = ("Prefer the response that addresses the request more directly.",
          "Prefer the response that answers what was actually asked.")


def feature_votes(principle: str, first: str, second: str) -> int:
    """+1 per recognised feature that favours `first`, -1 per one that favours `second`."""
    text = principle.lower()
    votes = 0
    for f in FEATURES:
        if not any(k in text for k in f.keywords):
            continue
        a, b = f.measure(first), f.measure(second)
        if a == b or not f.relevant(a, b):
            continue
        wants_less = f.prefers_less != f.reverse(text)
        votes += 1 if (a < b) == wants_less else -1
    return votes


def _principles_in(text: str) -> list[str]:
    bullets = [line[2:].strip() for line in text.splitlines() if line.startswith("- ")]
    return bullets or [text]


class StandInTeacher:
    """Deterministic stand-in teacher (NOT a model): proposes and judges by simple text features."""

    name = STANDIN_NAME
    remote = False

    def __init__(self, unparsed_every: int = 0, decoy: bool = True):
        self.unparsed_every = unparsed_every
        self.decoy = decoy
        self.calls: dict[str, int] = {"chat": 0, "complete": 0, "logprobs": 0}

    # -- the three kinds of prompt
    def _propose(self, content: str) -> str:
        m = _PROPOSE.search(content)
        count = _COUNT.search(content)
        if not m or not count:
            return PLACEHOLDER
        _, chosen, rejected = m.groups()
        k = int(count.group(1))
        if self.unparsed_every and _h("unparsed", chosen, rejected) % self.unparsed_every == 0:
            return "Looking at both, the first answer seems better overall to me."
        lines = []
        for f in FEATURES:
            a, b = f.measure(chosen), f.measure(rejected)
            if a == b or not f.relevant(a, b):
                continue
            main = (a < b) == f.prefers_less
            options = f.wordings if main else f.opposite
            lines.append(options[_h(f.name, chosen, rejected) % len(options)])
        if self.decoy:
            lines.append(DECOYS[_h("decoy", chosen) % len(DECOYS)])
        return "\n".join(f"- {line}" for line in lines[:k]) if lines else "No difference worth a principle."

    @staticmethod
    def _summary(content: str) -> str:
        members = [line for line in content.splitlines() if line.startswith("- ")]
        return members[0] if members else PLACEHOLDER

    @staticmethod
    def _judge_votes(content: str) -> int | None:
        m = _JUDGE.search(content)
        if not m:
            return None
        _, principle, first, second = m.groups()
        return sum(feature_votes(p, first, second) for p in _principles_in(principle))

    # -- ChatModel
    def chat(self, conversations: Sequence[Sequence[Message]], sampling: Sequence[Sampling]) -> list[str]:
        if len(conversations) != len(sampling):
            raise ValueError("one Sampling per conversation")
        self.calls["chat"] += 1
        out = []
        for conv in conversations:
            content = conv[-1]["content"]
            if "PREFERRED answer:" in content:
                out.append(self._propose(content))
            elif content.startswith("You are merging similar principles"):
                out.append(self._summary(content))
            else:
                votes = self._judge_votes(content)
                out.append(PLACEHOLDER if votes is None else "B" if votes < 0 else "A")
        return out

    def complete(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[str]:
        self.calls["complete"] += 1
        return [PLACEHOLDER for _ in prompts]

    def choice_logprobs(self, conversations: Sequence[Sequence[Message]], choices: Sequence[str]) -> list[list[float]]:
        self.calls["logprobs"] += 1
        out = []
        for conv in conversations:
            votes = self._judge_votes(conv[-1]["content"]) or 0
            out.append([2.5 * votes, 0.0][: len(choices)] + [0.0] * max(0, len(choices) - 2))
        return out

    def close(self) -> None:
        """Nothing to release."""


__all__ = ["DECOYS", "FEATURES", "STANDIN_NAME", "StandInTeacher", "feature_votes"]
