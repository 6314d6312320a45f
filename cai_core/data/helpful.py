"""Helpful data mixed into SFT (`sft.helpful_data`, `sft.helpful_ratio`), as the seeds mix harmful and helpful data.

The source is any `cai_core.data.inputs` source. A row gives (prompt, response) by its shape: `prompt` and
`response` strings; a chat list in `messages` (the first user turn and the assistant reply after it); HH-RLHF
`chosen` transcripts (the first human turn and the assistant reply after it); or `chosen` as a chat list
(ultrafeedback_binarized). Rows without both parts are skipped (`no_pair`), empty or repeated ones too
(`empty_text`, `duplicate`). With ratio r the mixed data holds round(r / (1 - r) * n) helpful rows for n CAI
rows (fewer if the source has fewer: counted as `helpful_short`); reading stops there.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from cai_core import records
from cai_core.data import formats, inputs


def _pair(row: dict, where: str, line: int) -> tuple[str, str] | None:
    if isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
        return row["prompt"], row["response"]
    for name in ("messages", "conversations", "chosen"):
        value = row.get(name)
        if isinstance(value, list):
            return _first_exchange([formats.message_parts(m, where, line, name) for m in value])
        if formats.is_transcript(value):
            return _first_exchange(formats.turns(value))
    return None


def _first_exchange(turns: list[tuple[str, str]]) -> tuple[str, str] | None:
    for i, (role, text) in enumerate(turns):
        if role in ("user", "human"):
            for later_role, later in turns[i + 1:]:
                if later_role in ("assistant", "gpt", "bot", "model"):
                    return text, later
                if later_role in ("user", "human"):
                    return None
            return None
    return None


def helpful_rows(source: str, want: int, counts: Counter) -> list[dict]:
    """Up to `want` SFT rows {id, prompt, response} from `source`."""
    opened = inputs.open_rows(source)
    out, seen = [], set()
    for line, row in opened.rows():
        if len(out) >= want:
            break
        got = _pair(row, opened.where, line)
        if got is None:
            counts["helpful_skipped_no_pair"] += 1
            continue
        prompt, response = got[0].strip(), got[1].strip()
        if not prompt or not response:
            counts["helpful_skipped_empty_text"] += 1
            continue
        if prompt in seen:
            counts["helpful_skipped_duplicate"] += 1
            continue
        seen.add(prompt)
        out.append({"id": records.row_id("helpful", prompt, response), "prompt": prompt, "response": response})
    return out


def mix_into(sft_rows: Path, source: str, ratio: float, out: Path) -> dict[str, float]:
    """Write the CAI rows of `sft_rows` with helpful rows from `source` interleaved at `ratio` to `out`; the counts."""
    cai = records.read_jsonl(sft_rows, records.SFT_ROW)
    want = round(ratio / (1 - ratio) * len(cai))
    counts: Counter = Counter({"helpful_skipped_no_pair": 0, "helpful_skipped_empty_text": 0,
                               "helpful_skipped_duplicate": 0})
    helpful = helpful_rows(source, want, counts) if want else []
    keyed = [((k + 0.5) / len(part), i, row) for i, part in enumerate((cai, helpful)) for k, row in enumerate(part)]
    records.write_jsonl(out, [row for _, _, row in sorted(keyed, key=lambda x: (x[0], x[1]))])
    counts.update({"cai_rows": len(cai), "helpful_rows": len(helpful), "helpful_target": want,
                   "helpful_short": want - len(helpful)})
    return {k: float(v) for k, v in counts.items()}


__all__ = ["helpful_rows", "mix_into"]
