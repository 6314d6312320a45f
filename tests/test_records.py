import json

import pytest

from cai_core import records
from cai_core.errors import InputError


def write(tmp_path, content: bytes):
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    return path


def test_reads_rows_and_skips_blank_lines(tmp_path):
    path = write(tmp_path, b'{"id": "1", "prompt": "hi"}\n\n{"id": "2", "prompt": "yo"}\n')
    assert [r["id"] for r in records.read_jsonl(path, records.PROMPT)] == ["1", "2"]


@pytest.mark.parametrize("content, message", [
    (b'{"id": "1", "prompt": "a"}\n{"id": "2"\n', r"in.jsonl:2: not valid JSON"),
    (b'{"id": "1"}\n', r"in.jsonl:1: field 'prompt': missing"),
    (b'{"id": "1", "prompt": 5}\n', r"in.jsonl:1: field 'prompt': expected a string, got int"),
    (b'{"id": "1", "prompt": "ok"}\n{"id": "2", "prompt": "\xff\xfe"}\n', r"in.jsonl:2: not valid UTF-8"),
    (b'[1, 2]\n', r"in.jsonl:1: expected a JSON object"),
    (b'', r"in.jsonl: no rows"),
])
def test_bad_input_names_file_line_field(tmp_path, content, message):
    with pytest.raises(InputError, match=message):
        records.read_jsonl(write(tmp_path, content), records.PROMPT)


def test_oversized_line_is_refused(tmp_path):
    big = json.dumps({"id": "1", "prompt": "x" * (10 * 1024 * 1024)}).encode() + b"\n"
    with pytest.raises(InputError, match=r"in.jsonl:1: line is 10.5 MB, above the 4.2 MB limit"):
        records.read_jsonl(write(tmp_path, big), records.PROMPT)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        records.read_jsonl(tmp_path / "nope.jsonl")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    records.write_jsonl(path, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        records.write_jsonl(path, rows())
    assert records.read_jsonl(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_row_id_is_stable_and_content_based():
    assert records.row_id("a", 1) == records.row_id("a", 1)
    assert records.row_id("a", 1) != records.row_id("a", 2)
    assert len(records.row_id("x")) == 16


def test_lone_surrogate_round_trips_as_an_escape(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "half a pair \\ud83d here", "emoji": "\\ud83d\\ude0a"}\n')
    rows = records.read_jsonl(path)
    assert rows[0]["text"] == "half a pair \ud83d here"
    assert records.write_jsonl(tmp_path / "copy.jsonl", rows) == 1
    assert records.read_jsonl(tmp_path / "copy.jsonl") == rows
    records.write_jsonl(tmp_path / "plain.jsonl", [{"emoji": "\U0001F60A"}])
    assert "\U0001F60A" in (tmp_path / "plain.jsonl").read_text(encoding="utf-8")
