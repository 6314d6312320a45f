"""The request journal's records, parts and signal handlers, one behaviour at a time (no client, no server):
part names, counters, replay of results and batches, compaction, failures kept for the next write, and the
handlers it installs and restores."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from cai_core import storage
from cai_core.errors import StorageError
from cai_core.llm.journal import PART_PREFIX, Journal


def _parts(prefix) -> list[str]:
    return sorted(p for p in storage.list_files(str(prefix)) if os.path.basename(p).startswith(PART_PREFIX))


def test_defaults():
    j = Journal("unused")
    assert (j.flush_s, j.compact_over) == (5.0, 200)


def test_part_names_carry_the_time_the_writer_and_a_sequence(tmp_path):
    j = Journal(tmp_path).open()
    before = int(time.time() * 1000)
    for i in range(3):
        j.add_result(f"k{i}", {"i": i})
        j.flush()
    after = int(time.time() * 1000)
    names = [os.path.basename(p) for p in _parts(tmp_path)]
    pattern = re.compile(rf"{PART_PREFIX}(\d{{13}})-{os.getpid()}-([0-9a-f]{{8}})-(\d{{6}})\.jsonl")
    matches = [pattern.fullmatch(n) for n in names]
    assert all(matches), names
    assert [m.group(3) for m in matches] == ["000001", "000002", "000003"]
    assert len({m.group(2) for m in matches}) == 1 and j.writer_id == f"{os.getpid()}-{matches[0].group(2)}"
    assert all(before <= int(m.group(1)) <= after for m in matches)
    assert Journal(tmp_path).writer_id != j.writer_id  # each writer its own id: no two write the same name


def test_counters_of_a_writer_and_of_a_reader(tmp_path):
    j = Journal(tmp_path)
    assert (j.replayed, j.parts_read, j.parts_written, j.lines_written, j.bad_lines) == (0, 0, 0, 0, 0)
    j.open()
    assert (j.replayed, j.parts_read) == (0, 0)
    j.add_result("a", {"x": 1})
    j.add_result("b", {"x": 2})
    assert j.flush() == 2
    j.add_result("c", {"x": 3})
    assert j.flush() == 1
    assert j.flush() == 0  # nothing buffered: no empty part
    assert (j.parts_written, j.lines_written) == (2, 3) and len(_parts(tmp_path)) == 2
    reader = Journal(tmp_path).open()
    assert (reader.replayed, reader.parts_read, reader.parts_written, reader.lines_written) == (3, 2, 0, 0)
    reader.open()  # idempotent: read once
    assert (reader.replayed, reader.parts_read) == (3, 2)
    assert len(reader) == 3 and "b" in reader and reader.get("c") == {"x": 3} and reader.get("zz") is None


def test_only_part_files_are_read(tmp_path):
    j = Journal(tmp_path).open()
    j.add_result("a", {"x": 1})
    j.flush()
    rec = json.dumps({"t": "r", "k": "stray", "r": {"x": 0}}) + "\n"
    (tmp_path / "notes.jsonl").write_text(rec)  # not a part: wrong prefix
    (tmp_path / f"{PART_PREFIX}0000000000000-x-000001.jsonl.tmp").write_text(rec)  # a part being written
    reader = Journal(tmp_path).open()
    assert sorted(reader.results) == ["a"] and reader.parts_read == 1


def test_bad_lines_are_skipped_and_the_lines_after_them_still_replayed(tmp_path, capsys):
    part = tmp_path / f"{PART_PREFIX}0000000000001-w-000001.jsonl"
    part.write_text("\n".join([json.dumps({"t": "r", "k": "a", "r": {"x": 1}}), "{not json", "",
                               json.dumps({"k": "no kind"}), json.dumps({"t": "r", "k": "b", "r": {"x": 2}})]) + "\n")
    j = Journal(tmp_path).open()
    assert sorted(j.results) == ["a", "b"] and j.bad_lines == 2 and j.replayed == 2
    assert "2 unreadable lines skipped" in capsys.readouterr().err
    part.write_text(json.dumps({"t": "r", "k": "a", "r": {"x": 1}}) + "\n")
    Journal(tmp_path).open()
    assert "unreadable" not in capsys.readouterr().err


def test_batches_replay_with_their_state(tmp_path):
    j = Journal(tmp_path).open()
    j.add_batch("b1", ["k1", "k2"], "/v1/chat/completions", note="first")
    j.add_batch("b2", ["k3"], "/v1/chat/completions")
    j.add_result("k9", {"x": 9})
    j.finish_batch("b1", "completed")
    assert [b["id"] for b in j.pending_batches()] == ["b2"]
    j.flush()
    reader = Journal(tmp_path).open()
    assert sorted(reader.results) == ["k9"]
    assert reader.batches["b1"]["done"] is True and reader.batches["b1"]["status"] == "completed"
    assert reader.batches["b1"]["keys"] == ["k1", "k2"] and reader.batches["b1"]["note"] == "first"
    assert not reader.batches["b2"].get("done") and reader.batches["b2"]["keys"] == ["k3"]
    assert [b["id"] for b in reader.pending_batches()] == ["b2"]


def test_pending_batches_are_the_unfinished_ones_oldest_first(tmp_path):
    j = Journal(tmp_path).open()
    for name in ("old", "mid", "new"):
        j.add_batch(name, [f"{name}-k"], "/v1/chat/completions")
        time.sleep(0.002)
    j.batches["old"]["created"], j.batches["new"]["created"] = 10.0, 5.0
    assert [b["id"] for b in j.pending_batches()] == ["new", "old", "mid"]
    j.finish_batch("new", "failed")
    assert [b["id"] for b in j.pending_batches()] == ["old", "mid"]
    j.finish_batch("unknown", "completed")  # a batch this journal never saw submitted: recorded, never pending
    assert j.batches["unknown"]["done"] is True and [b["id"] for b in j.pending_batches()] == ["old", "mid"]


def test_compaction_happens_only_past_compact_over_and_keeps_everything(tmp_path):
    j = Journal(tmp_path).open()
    j.add_batch("b1", ["k1"], "/e")
    j.add_batch("b2", ["k2"], "/e")
    j.finish_batch("b2", "completed")
    j.flush()
    for i in range(2):
        j.add_result(f"k{i}", {"text": f"résumé {i}"})
        j.flush()
    assert len(_parts(tmp_path)) == 3
    Journal(tmp_path, compact_over=3).open()
    assert len(_parts(tmp_path)) == 3, "3 parts are not over compact_over=3"
    reader = Journal(tmp_path, compact_over=2).open()
    parts = _parts(tmp_path)
    assert len(parts) == 1 and "-compact-" in os.path.basename(parts[0])
    again = Journal(tmp_path).open()
    for journal in (reader, again):
        assert journal.results == {"k0": {"text": "résumé 0"}, "k1": {"text": "résumé 1"}}
        assert [b["id"] for b in journal.pending_batches()] == ["b1"]
        assert journal.batches["b2"]["done"] is True and journal.batches["b2"]["status"] == "completed"


def test_a_part_that_cannot_be_deleted_after_compaction_is_left(tmp_path, monkeypatch):
    j = Journal(tmp_path).open()
    for i in range(3):
        j.add_result(f"k{i}", {"i": i})
        j.flush()

    def undeletable(uri, cfg=None):
        raise StorageError(f"cannot delete {uri}")

    monkeypatch.setattr(storage, "delete", undeletable)
    reader = Journal(tmp_path, compact_over=1).open()
    assert sorted(reader.results) == ["k0", "k1", "k2"]
    assert len(_parts(tmp_path)) == 4  # the three parts and the compacted one: read twice next time, harmless


def test_an_unreadable_prefix_is_named(tmp_path, monkeypatch):
    def failing(prefix, cfg=None):
        raise StorageError("access denied")

    monkeypatch.setattr(storage, "list_files", failing)
    with pytest.raises(StorageError, match=r"cannot read the request journal at .*: access denied"):
        Journal(tmp_path).open()


def test_a_failed_flush_keeps_its_lines_for_the_next(tmp_path, monkeypatch):
    j = Journal(tmp_path).open()
    j.add_result("a", {"x": 1})
    j.add_result("b", {"x": 2})
    real = storage.write_bytes

    def failing(uri, data, cfg=None):
        raise KeyboardInterrupt  # not an Exception: the lines must still be kept

    monkeypatch.setattr(storage, "write_bytes", failing)
    with pytest.raises(KeyboardInterrupt):
        j.flush()
    monkeypatch.setattr(storage, "write_bytes", real)
    j.add_result("c", {"x": 3})
    assert j.flush() == 3
    assert sorted(Journal(tmp_path).open().results) == ["a", "b", "c"]


def test_the_periodic_flush_survives_a_failed_write(tmp_path, monkeypatch):
    j = Journal(tmp_path, flush_s=0.05)
    real, calls = storage.write_bytes, []

    def flaky(uri, data, cfg=None):
        calls.append(uri)
        if len(calls) == 1:
            raise OSError("S3 hiccup")
        return real(uri, data, cfg)

    monkeypatch.setattr(storage, "write_bytes", flaky)
    with j.activate():
        j.add_result("a", {"x": 1})
        deadline = time.monotonic() + 60
        while not _parts(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _parts(tmp_path), "the periodic flush stopped after one failed write"
        assert j._thread.daemon  # a forgotten journal never keeps a finished process alive
    assert sorted(Journal(tmp_path).open().results) == ["a"]


def test_a_failed_write_in_the_signal_handler_keeps_the_buffer(tmp_path, monkeypatch, capsys):
    j = Journal(tmp_path, flush_s=3600)
    seen = []
    with j.activate(on_signal=seen.append):
        j.add_result("a", {"x": 1})
        real = storage.write_bytes

        def failing(uri, data, cfg=None):
            raise OSError("disk full")

        monkeypatch.setattr(storage, "write_bytes", failing)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler must not raise: it reports and goes on
        for _ in range(200):
            if seen:
                break
            time.sleep(0.01)
        assert seen == [signal.SIGTERM]
        assert "flush on signal failed: disk full" in capsys.readouterr().err
        monkeypatch.setattr(storage, "write_bytes", real)
    assert sorted(Journal(tmp_path).open().results) == ["a"]  # the closing flush wrote what was kept


def test_the_previous_handlers_are_restored_after_a_run(tmp_path):
    calls = []

    def mine(sig, frame):
        calls.append(sig)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, mine)
    try:
        j = Journal(tmp_path, flush_s=3600)
        with j.activate():
            assert signal.getsignal(signal.SIGTERM) == j._handle
            assert signal.getsignal(signal.SIGINT) == j._handle
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is previous[signal.SIGINT]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_without_on_signal_the_journal_is_flushed_then_the_previous_handler_runs(tmp_path):
    calls = []

    def mine(sig, frame):
        calls.append(sig)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        j = Journal(tmp_path, flush_s=3600)
        with j.activate():
            j.add_result("a", {"x": 1})
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(200):
                if calls:
                    break
                time.sleep(0.01)
            assert calls == [signal.SIGTERM]
            assert sorted(Journal(tmp_path).open().results) == ["a"]  # flushed before the handler ran
            assert signal.getsignal(signal.SIGTERM) is mine  # reraise restored it
    finally:
        signal.signal(signal.SIGTERM, previous)


_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from cai_core.llm.journal import Journal
    if sys.argv[2] == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    j = Journal(sys.argv[1], flush_s=3600)
    with j.activate():
        j.add_result("a", {"x": 1})
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
    print("survived", flush=True)
""")


@pytest.mark.parametrize("before,survives", [("default", False), ("ignore", True)])
def test_without_on_signal_the_signal_keeps_its_previous_disposition(tmp_path, before, survives):
    """SIG_DFL before the run: the process dies of the signal (after the journal is flushed); SIG_IGN: it is
    still ignored."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "journal"), before], capture_output=True,
                          text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    if survives:
        assert proc.returncode == 0 and "survived" in proc.stdout, proc.stderr
    else:
        assert proc.returncode == -signal.SIGTERM and "survived" not in proc.stdout, proc.stderr
    assert sorted(Journal(str(tmp_path / "journal")).open().results) == ["a"]


def test_handlers_are_only_installed_from_the_main_thread(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def run():
        with Journal(tmp_path, flush_s=3600).activate() as j:
            seen.append(signal.getsignal(signal.SIGTERM))
            j.add_result("a", {"x": 1})

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert seen == [before] and signal.getsignal(signal.SIGTERM) == before
    assert sorted(Journal(tmp_path).open().results) == ["a"]


def test_a_signal_that_cannot_be_handled_here_does_not_stop_the_journal(tmp_path, monkeypatch):
    """Where setting or restoring a handler fails (ValueError or OSError, e.g. a signal the platform lacks), the
    run goes on with periodic flushes and nothing is lost."""
    def refuse(sig, handler):
        raise (OSError if sig == signal.SIGINT else ValueError)(f"signal {sig} not here")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(signal, "signal", refuse)
    with Journal(tmp_path, flush_s=3600).activate() as j:  # installing fails for both signals
        j.add_result("a", {"x": 1})
        assert j._prev_handlers == {}
    j._prev_handlers = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: None}
    j._uninstall()  # restoring fails for both
    assert j._prev_handlers == {}
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) == before
    assert sorted(Journal(tmp_path).open().results) == ["a"]


def test_a_record_of_a_kind_this_version_does_not_know_is_left_alone(tmp_path):
    """A newer writer's record kind is neither a result nor a batch here (and not an unreadable line)."""
    part = tmp_path / f"{PART_PREFIX}0000000000001-w-000001.jsonl"
    part.write_text("\n".join(json.dumps(r) for r in [{"t": "a", "id": "x", "keys": ["k"]},
                                                       {"t": "b", "id": "b1", "keys": ["k1"]}]) + "\n")
    j = Journal(tmp_path).open()
    assert list(j.batches) == ["b1"] and j.results == {} and j.bad_lines == 0 and j.replayed == 2
