"""Refuse/comply stance of a response, so a cleanup can be checked not to have changed it.

The verifier (`cai_core.cleaning.verify`) classifies the text sent to the LLM
cleaner and the text it sent back; a different label is a ``stance_flipped``
failure. Labels:

===============  =============================================================
label            meaning
===============  =============================================================
``refusal``      the response declines ("I can't help with that.") and offers
                 nothing in its place
``partial``      it declines but offers a safe alternative ("I can't help
                 with that. Instead, I can explain how locks work.")
``compliance``   it does what was asked (no first-person refusal)
``empty``        nothing to classify (no letters)
===============  =============================================================

The default classifier is `rule_stance`: first-person refusal phrases
("I can't / won't / am unable to help, provide, write ...", "I must decline",
"I'm not comfortable", "it would not be appropriate", and the same in French,
Spanish, German, Italian and Portuguese), and alternative phrases ("instead,
I can", "what I can do", "I'd be happy to help with", "consider reaching out
to"). A refusal phrase anywhere makes the text a refusal (a partial one when
an alternative phrase is there too): a cleanup only removes degeneration, so
the same phrases must be there before and after, and a changed label means
the cleanup touched the stance.

`LLMStanceClassifier` asks a model instead (``verify.stance_classifier: llm``)
with the stance task (`cai_core.tasks.stance`): the text goes in as delimited
data, the reply must be one label; a reply that is not one is None (the
verifier then fails the row as ``stance_unknown``).
"""
from __future__ import annotations

import re
from typing import Sequence

from cai_core.llm.base import ChatModel, Sampling, batches
from cai_core.tasks import stance as stance_task

REFUSAL = "refusal"
PARTIAL = "partial"
COMPLIANCE = "compliance"
EMPTY = "empty"
LABELS = (REFUSAL, PARTIAL, COMPLIANCE, EMPTY)

__all__ = ["LABELS", "REFUSAL", "PARTIAL", "COMPLIANCE", "EMPTY", "rule_stance", "stance_features",
           "LLMStanceClassifier"]

_ACTS = (r"(?:help|assist|aid|support|provide|give|offer|share|write|create|generate|produce|draft|compose|make|"
         r"build|do|comply|fulfil+|complete|answer|respond|explain|describe|detail|tell|teach|show|guide|walk|"
         r"recommend|suggest|encourage|condone|endorse|facilitate|participate|engage|continue|go along|"
         r"discuss|disclose|reveal|promote|advise|instruct|contribute|be (?:of )?(?:help|assistance))")
_NEG_MODAL = (r"(?:can(?:not|'t| ?not)|won't|will not|wouldn't|would not|shouldn't|should not|"
              r"am (?:not able|unable|not going|not willing|unwilling)|'m (?:not able|unable|not going|not willing|unwilling)|"
              r"must (?:decline|refuse)|have to (?:decline|refuse)|need to (?:decline|refuse)|"
              r"refuse|decline|'ll have to (?:decline|pass))")

_REFUSAL_RES = [
    # "I can't help with ...", "I won't provide ...", "I'm unable to assist ...", "I must decline ..."
    re.compile(rf"\bi\s+(?:really\s+|simply\s+|just\s+|absolutely\s+|honestly\s+)?{_NEG_MODAL}"
               rf"(?:\s+(?:to|be able to|in good conscience|ethically|responsibly))?\s+{_ACTS}\b"),
    re.compile(r"\bi\s+(?:must|have to|need to|will have to|'ll have to|'m going to have to)\s+"
               r"(?:respectfully\s+|politely\s+)?(?:decline|refuse|pass)\b"),
    re.compile(r"\bi\s+(?:respectfully\s+|politely\s+)?(?:decline|refuse)\b"),
    re.compile(r"\bi(?:'m| am)\s+(?:not\s+(?:comfortable|in a position|permitted|allowed)|unable|sorry,?\s+but\s+i\s+"
               r"(?:can(?:not|'t)|won't|will not|am unable|'m unable|am not able|'m not able))\b"),
    re.compile(r"\bi\s+(?:don't|do not)\s+(?:feel\s+comfortable|condone|endorse|engage\s+in|participate\s+in|"
               r"(?:help|assist)\s+with|provide|give\s+out|share)\b"),
    re.compile(r"\b(?:it|that|this)\s+(?:would|is|isn't|wouldn't)\s+(?:not\s+)?(?:be\s+)?"
               r"(?:appropriate|responsible|ethical|safe|right)\s+(?:for me\s+)?to\s+(?:help|assist|provide|share|"
               r"give|explain|write|describe)\b"),
    re.compile(r"\b(?:it|that|this)\s+(?:would\s+not|wouldn't|is\s+not|isn't)\s+be\s+appropriate\b"),
    re.compile(r"\bnot something i\s+(?:can|will|am able to|'m able to|feel comfortable)\b"),
    re.compile(r"\b(?:against|violates?)\s+my\s+(?:guidelines|principles|policies|policy|values|programming)\b"),
    re.compile(r"\bi\s+(?:can't|cannot|can not|won't)\s+and\s+(?:won't|will not)\b"),
    re.compile(r"\bas an ai[^.!?\n]{0,40}\b(?:can(?:not|'t)|won't|unable|not able)\b"),
    # French, Spanish, Italian, Portuguese, German
    re.compile(r"\bje\s+ne\s+(?:peux|pourrai|vais|souhaite|suis)\s+pas\b|\bje\s+(?:refuse|dois\s+refuser)\b"),
    re.compile(r"\bno\s+(?:puedo|podr[ée]|voy\s+a)\s+(?:ayudar|proporcionar|dar|ofrecer|explicar|escribir|hacer|"
               r"participar|compartir|asistir)\b|\bme\s+niego\b"),
    re.compile(r"\bnon\s+(?:posso|potr[òo])\s+(?:aiutar|fornir|dare|spiegar|scriver|far)\w*"),
    re.compile(r"\bn[ãa]o\s+(?:posso|poderei|vou)\s+(?:ajudar|fornecer|dar|explicar|escrever|fazer|compartilhar)\b"),
    re.compile(r"\b(?:ich\s+kann|kann\s+ich)\s+(?:ihnen\s+|dir\s+|dabei\s+|damit\s+|hierbei\s+)*(?:leider\s+)?"
               r"(?:nicht|keine)\b|\bich\s+werde\s+(?:ihnen\s+|dir\s+)?(?:dabei\s+)?nicht\s+helfen\b"),
]

_ALTERNATIVE_RES = [
    re.compile(r"\b(?:instead|however|but|that said|what i can do|alternatively)\b[^.!?\n]{0,40}?\bi\s+"
               r"(?:can|could|would be (?:happy|glad)|'d be (?:happy|glad)|am happy|'m happy|am glad|'m glad|"
               r"will gladly|'ll gladly|would love|'d love|may)\b(?!'|\s*not\b|n't)"),
    re.compile(r"\bwhat i can do\b|\bi can (?:instead|however|also|certainly|gladly)\b|\bi(?:'d| would) be "
               r"(?:happy|glad) to\b|\bi(?:'m| am) (?:happy|glad) to\b|\bi can (?:help|offer|suggest|share|explain|"
               r"point|tell|give|provide|recommend|walk)\b"),
    re.compile(r"\b(?:consider|try|please)\s+(?:reaching out|contacting|talking|speaking|calling|consulting)\b|"
               r"\b(?:reach out|talk|speak)\s+to\s+(?:a|an|your|someone|local)\b|\bcontact\s+(?:a|an|your|the|local)\b"),
    re.compile(r"\bhere (?:are|is) (?:some|a few)\s+(?:safe|safer|legal|legitimate|alternative|other|general)\b"),
    re.compile(r"\bif you(?:'re| are)\s+(?:interested|looking|curious|in danger|struggling|worried)\b"),
    re.compile(r"\ben revanche\b|\bje peux (?:vous|t')\w*|\ben cambio\b|\bpuedo (?:ayudarte|ofrecerte|sugerir)\b|"
               r"\bstattdessen\b|\binvece\b|\bem vez disso\b"),
]

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_LETTER_RE = re.compile(r"[^\W\d_]")


def _norm(text: str) -> str:
    return " ".join(text.translate(_APOSTROPHES).lower().split())


def stance_features(text: str) -> tuple[bool, bool]:
    """(has a first-person refusal phrase, has a safe-alternative phrase)."""
    t = _norm(text)
    refusal = any(r.search(t) for r in _REFUSAL_RES)
    alternative = refusal and any(r.search(t) for r in _ALTERNATIVE_RES)
    return refusal, alternative


def rule_stance(text: str) -> str:
    """The stance label of `text` from refusal and alternative phrases (see the module doc)."""
    if not _LETTER_RE.search(text):
        return EMPTY
    refusal, alternative = stance_features(text)
    if not refusal:
        return COMPLIANCE
    return PARTIAL if alternative else REFUSAL


class LLMStanceClassifier:
    """Stance labels from a model (temperature 0); None where the reply is not one label."""

    def __init__(self, llm: ChatModel, batch_size: int = 32, seed: int = 0):
        self.llm, self.batch_size, self.seed = llm, batch_size, seed
        self.calls = 0
        self.requests = 0
        self.chars_in = 0
        self.chars_out = 0

    def classify(self, texts: Sequence[str]) -> list[str | None]:
        out: list[str | None] = []
        for batch in batches(self.llm, texts, self.batch_size):
            convs = [stance_task.format_input(t) for t in batch]
            replies = self.llm.chat(convs, [Sampling(temperature=0.0, max_new_tokens=4, seed=self.seed)] * len(convs))
            self.calls += 1
            self.requests += len(convs)
            self.chars_in += sum(len(m["content"]) for c in convs for m in c)
            self.chars_out += sum(len(r) for r in replies)
            out += [stance_task.parse_output(r).label for r in replies]
        return out
