"""SIGTERM while a flush is in progress: the lines that flush had taken from the buffer but not yet written must
be in the part the signal handler writes, or a killed pod loses finished (paid-for) requests."""
from __future__ import annotations

import os
import signal
import threading

from cai_core import storage
from cai_core.llm.journal import Journal


def test_sigterm_during_a_flush_keeps_the_lines_of_that_flush(tmp_path, monkeypatch):
    prefix = str(tmp_path / "journal")
    journal = Journal(prefix, flush_s=3600)  # no periodic flush: only the flush below and the signal write
    real_write = storage.write_bytes
    entered, release = threading.Event(), threading.Event()

    def stuck_write(uri, data, cfg=None):
        if "-sig-" in os.path.basename(uri):
            return real_write(uri, data, cfg)
        entered.set()  # the ordinary flush: it hangs (a slow S3 PUT) and never completes
        release.wait(20)
        raise OSError("the pod was killed before this write completed")

    monkeypatch.setattr(storage, "write_bytes", stuck_write)
    signals: list[int] = []
    in_flush = [f"k{i}" for i in range(3)]
    buffered = [f"k{i}" for i in range(3, 5)]

    def flush_in_thread():
        try:
            journal.flush()
        except OSError:
            pass

    with journal.activate(on_signal=signals.append):
        for key in in_flush:
            journal.add_result(key, {"text": f"result of {key}"})
        flusher = threading.Thread(target=flush_in_thread)
        flusher.start()
        assert entered.wait(10)
        for key in buffered:  # finished while the flush hangs: still in the buffer
            journal.add_result(key, {"text": f"result of {key}"})
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(200):  # the handler runs in the main thread between bytecodes
            if signals:
                break
            threading.Event().wait(0.01)
        assert signals == [signal.SIGTERM]
        # what a rerun finds now, before anything else gets the chance to write (the process is dying)
        on_disk = Journal(prefix).open()
        release.set()
        flusher.join(10)
        monkeypatch.setattr(storage, "write_bytes", real_write)  # the closing flush of activate may write again
    assert sorted(on_disk.results) == sorted(in_flush + buffered), \
        "the lines of the flush in progress must be written by the signal handler"
    assert on_disk.results["k1"] == {"text": "result of k1"}
    sig_parts = [p for p in storage.list_files(prefix) if "-sig-" in p]
    assert len(sig_parts) == 1
