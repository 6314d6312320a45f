"""The request journal: part files, replay with zero duplicate requests, flush on SIGTERM, S3."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cai_core import storage
from cai_core.llm.client import ClientConfig, LLMClient, chat_request
from cai_core.llm.journal import Journal
from cai_core.testing.sim_openai import SimConfig, SimServer

MODEL = "sim-model"


@pytest.fixture
def sim():
    with SimServer(SimConfig(latency_s=(0.0, 0.005))) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def _reqs(n: int, start: int = 0) -> list:
    return [chat_request(MODEL, [{"role": "user", "content": f"question {i}"}], max_tokens=8, seed=i)
            for i in range(start, start + n)]


def _client(sim, journal) -> LLMClient:
    return LLMClient(ClientConfig(base_url=sim.base_url, model=MODEL, progress_every_s=60), journal)


def test_replay_sends_nothing_twice(sim, tmp_path):
    first = _client(sim, Journal(tmp_path)).run(_reqs(30))
    assert sim.stats()["served_total"] == 30
    client = _client(sim, Journal(tmp_path))
    again = client.run(_reqs(40))  # 30 known + 10 new
    st = sim.stats()
    assert st["served_total"] == 40 and st["duplicates"] == 0
    assert [r.text for r in again[:30]] == [r.text for r in first]
    assert all(r.source == "journal" for r in again[:30]) and all(r.source == "live" for r in again[30:])
    assert client.last_summary.from_journal == 30 and client.last_summary.sent == 10


def test_each_flush_writes_a_new_part_and_replay_merges_them(tmp_path):
    j = Journal(tmp_path).open()
    j.add_result("k1", {"s": "ok", "x": "one"})
    assert j.flush() == 1
    j.add_result("k2", {"s": "ok", "x": "two"})
    j.add_result("k1", {"s": "ok", "x": "one again"})
    assert j.flush() == 2 and j.flush() == 0
    parts = sorted(p for p in os.listdir(tmp_path) if p.startswith("part-"))
    assert len(parts) == 2
    (tmp_path / parts[0]).write_text((tmp_path / parts[0]).read_text() + "{not json\n")
    replay = Journal(tmp_path).open()
    assert replay.get("k1")["x"] == "one again" and replay.get("k2")["x"] == "two"
    assert replay.bad_lines == 1 and replay.parts_read == 2


def test_periodic_flush(tmp_path):
    j = Journal(tmp_path, flush_s=0.05)
    with j.activate():
        j.add_result("k", {"s": "ok", "x": "t"})
        deadline = time.monotonic() + 5
        while not os.listdir(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(p.startswith("part-") for p in os.listdir(tmp_path))


def test_many_parts_are_compacted_on_open(tmp_path):
    j = Journal(tmp_path).open()
    for i in range(12):
        j.add_result(f"k{i}", {"s": "ok", "x": str(i)})
        j.flush()
    j2 = Journal(tmp_path, compact_over=10).open()
    assert len(j2) == 12 and len(os.listdir(tmp_path)) == 1
    assert Journal(tmp_path).open().get("k11")["x"] == "11"


def test_failed_transient_requests_are_not_journaled(sim, tmp_path):
    sim.configure(error_rate=1.0)
    client = LLMClient(ClientConfig(base_url=sim.base_url, model=MODEL, max_retries=0, error_budget=1.0,
                                    progress_every_s=60), Journal(tmp_path))
    assert all(r.status == "retries_exhausted" for r in client.run(_reqs(3)))
    sim.configure(error_rate=0.0)
    assert all(r.ok and r.source == "live" for r in _client(sim, Journal(tmp_path)).run(_reqs(3)))


_CHILD = textwrap.dedent("""
    import sys
    from cai_core.llm.client import ClientConfig, LLMClient, chat_request
    from cai_core.llm.journal import Journal
    base_url, journal = sys.argv[1], sys.argv[2]
    reqs = [chat_request("sim-model", [{"role": "user", "content": f"question {i}"}], max_tokens=8, seed=i)
            for i in range(400)]
    cfg = ClientConfig(base_url=base_url, model="sim-model", max_concurrency=8, journal_flush_s=3600,
                       progress_every_s=3600, shutdown_grace_s=10)
    LLMClient(cfg, Journal(journal, flush_s=3600)).run(reqs)
    print("finished all requests", flush=True)
""")


def test_sigterm_flushes_and_rerun_has_zero_duplicates(tmp_path):
    # The journal never flushes on its own here (flush_s = 1 h): only the SIGTERM handler can save the work.
    with SimServer(SimConfig(latency_s=(0.05, 0.1)), process=True) as sim:
        script = tmp_path / "child.py"
        script.write_text(_CHILD)
        proc = subprocess.Popen([sys.executable, str(script), sim.base_url, str(tmp_path / "j")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 20
            while sim.stats()["served_total"] < 40 and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGTERM, out
        assert "finished all requests" not in out and "received SIGTERM" in out
        served_before = sim.stats()["served_total"]
        journal = Journal(tmp_path / "j").open()
        assert 40 <= len(journal) == served_before < 400  # everything served was saved
        client = LLMClient(ClientConfig(base_url=sim.base_url, model=MODEL, progress_every_s=60), journal)
        res = client.run([chat_request(MODEL, [{"role": "user", "content": f"question {i}"}], max_tokens=8, seed=i)
                          for i in range(400)])
        st = sim.stats()
        assert all(r.ok for r in res) and st["served_total"] == 400 and st["duplicates"] == 0


@pytest.mark.s3
def test_s3_journal(sim, s3_bucket):
    prefix = f"s3://{s3_bucket}/runs/r1/journal"
    first = _client(sim, Journal(prefix)).run(_reqs(10))
    parts = storage.list_files(prefix)
    assert len(parts) == 1 and parts[0].startswith(prefix + "/part-")
    lines = storage.read_bytes(parts[0]).decode().splitlines()
    assert len(lines) == 10 and json.loads(lines[0])["q"]["model"] == MODEL
    again = _client(sim, Journal(prefix)).run(_reqs(12))
    assert [r.text for r in again[:10]] == [r.text for r in first]
    assert sim.stats()["served_total"] == 12 and sim.stats()["duplicates"] == 0
    assert len(storage.list_files(prefix)) == 2  # a new part object per flush (S3 has no append)
