"""Throughput of the rule cleaner on one core, against a peer without the fast path and datatrove.

Generates N responses of 1-2 KB deterministically (a seeded mix of prose
paragraphs, bullet lists, code blocks and closing pleasantries; about 10%
degenerate: pleasantry loops, emoji runs, truncated endings, stray foreign
characters, sign-off pile-ups of the same or of different closings, repeated
sentences, mojibake), then times, in the same process and on the same texts:

* ours: `rule_clean(text, prompt)` with the default config (cheap pre-checks
  first, full analysis only where they cannot prove the text clean);
* peer 1: the same cleaner with ``fast_path=False``, i.e. every detector's full
  analysis on every text (no pre-check anywhere), then the rewrite;
* peer 2: plain ``detect(exhaustive=True)`` (all detectors, Gopher statistics
  included) plus the rewrite of its edit findings, on every text;
* datatrove (installed with the ``bench`` extra): its GopherRepetitionFilter
  and GopherQualityFilter (published thresholds, English word tokenizer) on
  every text; a text is flagged when either filter drops it. Both are filters
  (keep or drop a document), not cleaners, so only speed and what they flag
  compare: ours flags a text when it changes it.

Timings are CPU time of this process (one core; the process is pinned to one
CPU where the OS allows). Ours and peer 1 alternate pass by pass and the best
of ``--repeat`` passes is kept; peer 2 and datatrove (two orders of magnitude
slower) run once. It checks that ours
and both peers produce identical outputs, prints how many of the degenerate
(and of the clean) texts ours and datatrove flag, and prints the headline LAST
as ``rule_clean_responses_per_s: <x>``.

``--baseline MODULE`` also compares ours with the ``rule_clean`` of MODULE (an
older copy of the cleaner under another package name, importable from
PYTHONPATH; see benchmarks/RESULTS.md): the two alternate on chunks of 500
texts, each chunk timed ``--repeat`` times, and the fastest time of each chunk
is summed, so load that comes and goes on a shared machine hits both alike.
It compares all texts and the clean ones alone.

    python benchmarks/clean_throughput.py [--n 20000] [--seed 0] [--repeat 3] [--no-datatrove] [--baseline MODULE]
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import random
import sys
import time

from cai_core.cleaning.rule import RuleCleanConfig, apply_edits, rule_clean
from cai_core.metrics.detectors import EDIT_CODES, MOJIBAKE, detect

SUBJECTS = ["The first step", "A good habit", "This approach", "The main risk", "Your budget", "The recipe",
            "Regular practice", "A short walk", "The library", "Most beginners", "The new policy", "Each layer",
            "A simple test", "The compiler", "Your landlord", "The garden", "Good sleep", "A spreadsheet",
            "The battery", "Your manager", "The museum", "Fresh basil", "The river", "A backup plan"]
VERBS = ["depends on", "improves", "reduces", "needs", "protects", "changes", "supports", "slows down",
         "speeds up", "explains", "replaces", "hides", "shows", "keeps", "limits", "affects", "simplifies"]
OBJECTS = ["the total cost", "your daily routine", "the final result", "the amount of water", "long-term memory",
           "the error messages", "the monthly payment", "the flavour of the sauce", "the time you need",
           "the size of the file", "the number of steps", "your sense of progress", "the noise at night",
           "the overall risk", "the way people read it", "the quality of the soil", "the build time"]
TAILS = ["", "", "", " in most cases", " over a few weeks", " when the weather is cold", " for small teams",
         " if you start early", " more than people expect", " by a noticeable margin", " on older machines",
         " according to most guides", " during the first month", " without extra tools"]
OPENERS = ["Sure! Here is a short overview.", "Great question.", "Here's how it works.", "Good idea to ask first.",
           "Let's break it down.", "Happy to explain."]
CLOSERS = ["I hope this helps!", "Let me know if you have any other questions.", "Good luck with your project!",
           "I hope this helps! Let me know if you have any other questions.", "Hope that clears it up.", ""]
LIST_ITEMS = ["Check the settings first", "Write down what you tried", "Keep a spare copy", "Ask a friend to review it",
              "Start with the smallest case", "Measure before and after", "Label every box", "Set a reminder",
              "Use a timer", "Read the manual", "Clean the filter", "Compare two options"]
CODE = ["```python\ndef total(xs):\n    return sum(xs)\n\nprint(total([1, 2, 3]))\n```",
        "```bash\npip install requests\npython -m pytest -q\n```",
        "```js\nconst xs = [1, 2, 3];\nconsole.log(xs.map((x) => x * 2));\n```"]
PROMPTS = ["How do I get started?", "Can you explain this?", "What should I do next?", "Any tips?",
           "Why does this happen?", "How can I improve it?"]


def sentence(rng: random.Random) -> str:
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}"
    if rng.random() < 0.2:
        s += f", and {rng.choice(SUBJECTS).lower()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    if rng.random() < 0.02:
        s += " \u2014 usually"  # an em dash: non-ASCII but harmless (about a third of the texts get one)
    return s + rng.choice([".", ".", ".", ".", "!"])


def _block(rng: random.Random, items: list[str], used: set[str]) -> str:
    r = rng.random()
    if r < 0.12 and len(items) >= 3:
        return "\n".join(f"- {items.pop()}" for _ in range(min(len(items), rng.randint(3, 5))))
    if r < 0.17:
        return rng.choice(CODE)
    sents: list[str] = []
    while len(sents) < rng.randint(3, 6):
        s = sentence(rng)
        if s not in used:
            used.add(s)
            sents.append(s)
    return " ".join(sents)


def clean_response(rng: random.Random, size: int, limit: int = 2000) -> str:
    """A clean answer of about `size` characters (never over `limit`): opener, blocks, closer."""
    closer = rng.choice(CLOSERS)
    parts = [rng.choice(OPENERS)]
    length = len(parts[0]) + len(closer) + 2
    used: set[str] = set()
    items = rng.sample(LIST_ITEMS, len(LIST_ITEMS))  # a response does not list the same item twice
    tries = 0
    while length < size and tries < 20:
        block = _block(rng, items, used)
        tries += 1
        if length + len(block) + 2 > limit:
            continue
        parts.append(block)
        length += len(block) + 2
    if closer:
        parts.append(closer)
    return "\n\n".join(parts)


ACCENTED = ["café", "naïve", "déjà vu", "façade", "résumé", "Grüße", "crème brûlée", "São Paulo", "jalapeño", "Zürich"]
DEGENERATE_KINDS = ("pleasantry_loop", "emoji", "truncated", "foreign_script", "signoff_pileup", "repeated_sentence",
                    "mojibake", "signoff_then_offer")


def degenerate_response(rng: random.Random) -> tuple[str, str]:
    """A 1-2 KB answer with one kind of degeneration added to a clean body, and that kind."""
    kind = rng.randrange(len(DEGENERATE_KINDS))
    return _degenerate(rng, kind), DEGENERATE_KINDS[kind]


def _degenerate(rng: random.Random, kind: int) -> str:
    text = clean_response(rng, rng.randint(1000, 1350), limit=1400)
    if kind == 0:  # pleasantry loop
        return text + (" Let me know if you have any other questions. Have a great day!" * rng.randint(3, 8))
    if kind == 1:  # emoji runs
        return text.replace(". ", ". \U0001F60A\U0001F60A ", 2) + " \U0001F60A" * rng.randint(2, 6)
    if kind == 2:  # truncated ending
        return text + " " + sentence(rng).rsplit(" ", 2)[0]
    if kind == 3:  # stray foreign characters
        return text.replace(" the ", " the \u043f\u0440\u0438\u043c\u0435\u0440 ", 1).replace(" and ", " \u7684 and ", 1)
    if kind == 4:  # sign-off pile-up
        return text + "\n\nHave a great day!\nTake care!\nGoodbye!\nBest regards!"
    if kind == 6:  # UTF-8 read as cp1252: curly apostrophes, accented words, a degree sign
        words = " ".join(rng.sample(ACCENTED, 3))
        text = text.replace("'", "\u2019").replace(". ", f". It\u2019s {words} at {rng.randint(0, 10**6)}\u00b0. ", 1)
        return text.encode("utf-8").decode("sloppy-windows-1252")  # the codec ftfy registers
    if kind == 7:  # a sign-off and then another kind of closing
        return text + " Have a great day! Let me know if you need anything else!"
    s = sentence(rng)  # looping body sentence
    return text + " " + " ".join([s] * rng.randint(3, 6))


def make_corpus(n: int, seed: int) -> tuple[list[tuple[str, str]], list[str | None]]:
    """N (prompt, text) pairs and, for each, its degeneration kind (None: a clean text)."""
    rng = random.Random(seed)
    out, kinds = [], []
    for _ in range(n):
        if rng.random() < 0.10:
            text, kind = degenerate_response(rng)
        else:
            text, kind = clean_response(rng, rng.randint(1000, 1950)), None
        out.append((rng.choice(PROMPTS), text))
        kinds.append(kind)
    return out, kinds


def detect_and_rewrite(text: str, prompt: str) -> str:
    found = [f for f in detect(text, prompt, exhaustive=True) if f.code in EDIT_CODES and f.span is not None]
    repairs = [f for f in found if f.code == MOJIBAKE]
    if repairs:  # as the cleaner does: decode first, then judge the decoded text
        text = apply_edits(text, repairs)
        found = [f for f in detect(text, prompt, exhaustive=True)
                 if f.code in EDIT_CODES and f.code != MOJIBAKE and f.span is not None]
    return apply_edits(text, found) if found else text


def datatrove_filter():
    """datatrove's Gopher repetition + quality filters as one function: True where a text is dropped;
    None when datatrove is not installed."""
    try:
        from datatrove.data import Document
        from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    except ImportError as exc:
        print(f"datatrove: not installed ({exc}); pip install -e '.[bench]' (or pip install --no-deps "
              f"datatrove==0.10.1 plus loguru, humanize and spacy, leaving torch alone)")
        return None
    repetition, quality = GopherRepetitionFilter(), GopherQualityFilter()

    def dropped(text: str, prompt: str) -> bool:
        doc = Document(text=text, id="0")
        for f in (repetition, quality):
            kept = f.filter(doc)
            if kept is not True and not (isinstance(kept, bool) and kept):
                return True
        return False

    try:  # datatrove imports its word tokenizer (spacy) lazily, on the first text
        dropped("A warm-up text so the tokenizer is loaded before timing starts.", "")
    except ImportError as exc:
        print(f"datatrove: installed, but its English word tokenizer is not ({exc}); pip install -e '.[bench]'")
        return None
    return dropped


def one_pass(fn, corpus) -> tuple[float, list[str]]:
    t0 = time.process_time()
    outs = [fn(text, prompt) for prompt, text in corpus]
    return time.process_time() - t0, outs


def compare_chunked(fn_a, fn_b, corpus, repeat: int, chunk: int = 500) -> tuple[float, float]:
    """CPU seconds of `fn_a` and `fn_b` over `corpus`: chunk by chunk, alternating, fastest of `repeat` each."""
    total_a = total_b = 0.0
    for i in range(0, len(corpus), chunk):
        part = corpus[i:i + chunk]
        best_a = best_b = float("inf")
        for _ in range(repeat):
            best_a = min(best_a, one_pass(fn_a, part)[0])
            best_b = min(best_b, one_pass(fn_b, part)[0])
        total_a += best_a
        total_b += best_b
    return total_a, total_b


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="responses to generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="passes per timing; the best is kept")
    ap.add_argument("--no-datatrove", action="store_true", help="skip the datatrove peer")
    ap.add_argument("--baseline", metavar="MODULE", help="module with an older rule_clean to time alternately")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
        except OSError:
            pass
    corpus, kinds = make_corpus(args.n, args.seed)
    sizes = [len(t.encode()) for _, t in corpus]
    degenerate = [k is not None for k in kinds]
    n_deg = sum(degenerate)
    print(f"machine: {_cpu_name()}, python {sys.version.split()[0]}, "
          f"pinned to one core: {hasattr(os, 'sched_getaffinity') and len(os.sched_getaffinity(0)) == 1}")
    print(f"responses: {len(corpus)} ({n_deg} degenerate), bytes: mean {sum(sizes) / len(sizes):.0f}, "
          f"min {min(sizes)}, max {max(sizes)}")

    slow_cfg = RuleCleanConfig(fast_path=False)
    ours_fn = lambda text, prompt: rule_clean(text, prompt).text  # noqa: E731
    peer_fn = lambda text, prompt: rule_clean(text, prompt, slow_cfg).text  # noqa: E731
    datatrove_fn = None if args.no_datatrove else datatrove_filter()
    if datatrove_fn is None and not args.no_datatrove:
        print("datatrove peer skipped (see above); --no-datatrove runs without it")
    # ours and peer 1 alternate pass by pass (best pass kept), so load on the machine hits both alike
    t_ours = t_peer = float("inf")
    for _ in range(args.repeat):
        t, ours = one_pass(ours_fn, corpus)
        t_ours = min(t_ours, t)
        t, peer = one_pass(peer_fn, corpus)
        t_peer = min(t_peer, t)
    t_det, det = one_pass(detect_and_rewrite, corpus)
    t_dt, dt_flags = one_pass(datatrove_fn, corpus) if datatrove_fn is not None else (float("inf"), [])
    flags = [o != t for o, (_, t) in zip(ours, corpus)]
    changed = sum(flags)
    identical = ours == peer == det
    n = len(corpus)
    print(f"changed: {changed} ({changed / n:.1%}); outputs identical across the three: {identical}")
    by_kind = {k: [0, 0] for k in DEGENERATE_KINDS}
    for k, ours_flag, dt_flag in zip(kinds, flags, dt_flags or [False] * n):
        if k is not None:
            by_kind[k][0] += ours_flag
            by_kind[k][1] += dt_flag
    print(f"degenerate texts flagged: ours {sum(f for f, d in zip(flags, degenerate) if d)}/{n_deg}", end="")
    if datatrove_fn is not None:
        print(f", datatrove {sum(f for f, d in zip(dt_flags, degenerate) if d)}/{n_deg}")
        print(f"clean texts flagged: ours {sum(f for f, d in zip(flags, degenerate) if not d)}/{n - n_deg}, "
              f"datatrove {sum(f for f, d in zip(dt_flags, degenerate) if not d)}/{n - n_deg}")
    else:
        print()
    total = {k: sum(1 for x in kinds if x == k) for k in DEGENERATE_KINDS}
    print("  by kind (ours / datatrove of total): " + ", ".join(
        f"{k} {o}/{d if datatrove_fn else '-'} of {total[k]}" for k, (o, d) in by_kind.items()))
    print(f"peer_full_analysis_responses_per_s: {n / t_peer:.0f} ({t_peer / n * 1e6:.1f} us each)")
    print(f"peer_detect_plus_rewrite_responses_per_s: {n / t_det:.0f} ({t_det / n * 1e6:.1f} us each)")
    if datatrove_fn is not None:
        print(f"peer_datatrove_gopher_responses_per_s: {n / t_dt:.0f} ({t_dt / n * 1e6:.1f} us each)")
        print(f"ours_vs_datatrove: {t_dt / t_ours:.2f}x ({n / t_ours:.0f} / {n / t_dt:.0f} responses/s)")
    if args.baseline:
        base_clean = importlib.import_module(args.baseline).rule_clean
        base_fn = lambda text, prompt: base_clean(text, prompt).text  # noqa: E731
        clean_only = [c for c, d in zip(corpus, degenerate) if not d]
        for label, texts in (("all", corpus), ("clean", clean_only)):
            a, b = compare_chunked(ours_fn, base_fn, texts, args.repeat)
            m = len(texts)
            print(f"ours_vs_baseline_{label}: ours {m / a:.0f}/s ({a / m * 1e6:.1f} us), {args.baseline} {m / b:.0f}/s "
                  f"({b / m * 1e6:.1f} us), ours/baseline speed {b / a:.3f} ({m} texts)")
    print(f"speedup_vs_full_analysis: {t_peer / t_ours:.2f}x")
    print(f"speedup_vs_detect_plus_rewrite: {t_det / t_ours:.2f}x")
    print(f"rule_clean_us_per_response: {t_ours / n * 1e6:.1f}")
    print(f"rule_clean_responses_per_s: {n / t_ours:.0f}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
