"""The async teacher client against the simulated server: retries, limits, error budget, bad input, batch mode, judge."""
from __future__ import annotations

import json
import socket
import time

import pytest

from cai_core import records
from cai_core.errors import CaiError
from cai_core.llm.client import (ClientConfig, ErrorBudgetExceeded, LLMClient, TeacherError, chat_request,
                                 completion_request, parse_duration, retry_after_s)
from cai_core.llm.journal import Journal
from cai_core.llm.openai_backend import OpenAIChatModel
from cai_core.stages import judge
from cai_core.testing.sim_openai import SimConfig, SimServer

MODEL = "sim-model"


@pytest.fixture
def sim():
    with SimServer(SimConfig()) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def _cfg(sim, **kw) -> ClientConfig:
    base = dict(base_url=sim.base_url, model=MODEL, backoff_base_s=0.01, backoff_max_s=0.05, progress_every_s=60)
    base.update(kw)
    return ClientConfig(**base)


def _reqs(n: int, text: str = "q", **kw) -> list:
    return [chat_request(MODEL, [{"role": "user", "content": f"{text} {i}"}], max_tokens=8, **kw) for i in range(n)]


def test_results_in_order_and_identical_requests_sent_once(sim):
    reqs = _reqs(20) + _reqs(5)  # the last five repeat the first five
    res = LLMClient(_cfg(sim)).run(reqs)
    assert [r.key for r in res] == [q.key for q in reqs] and all(r.ok and r.text for r in res)
    assert res[0].text == res[20].text
    st = sim.stats()
    assert st["served_total"] == 20 and st["duplicates"] == 0


def test_completions_and_logprobs(sim):
    res = LLMClient(_cfg(sim)).run([completion_request(MODEL, "Once", max_tokens=5),
                                    chat_request(MODEL, [{"role": "user", "content": "x"}], logprobs=True, top_logprobs=3)])
    assert res[0].ok and res[0].text and res[1].top and len(res[1].top) == 3


def test_retries_5xx_then_succeeds(sim):
    sim.configure(fail_first=2, fail_status=503)
    client = LLMClient(_cfg(sim))
    res = client.run(_reqs(4))
    assert all(r.ok and r.attempts == 3 for r in res)
    assert client.last_summary.retried == 4 and sim.stats()["served_total"] == 4


def test_retry_after_is_honoured(sim):
    # The backoff alone would wait 30-60 s; the server's Retry-After says 0.3 s.
    sim.configure(fail_first=1, fail_status=429, fail_retry_after_s=0.3)
    client = LLMClient(_cfg(sim, backoff_base_s=60, backoff_max_s=120))
    t0 = time.monotonic()
    res = client.run(_reqs(3))
    dt = time.monotonic() - t0
    assert all(r.ok and r.attempts == 2 for r in res)
    # the jittered backoff alone would wait 30-60 s: a bound of 25 s tells the two apart and a loaded
    # 2-core machine cannot reach it (typically under 1 s)
    assert 0.3 <= dt < 25
    assert client.last_summary.rate_limited == 3


def test_retry_after_pauses_the_model_when_rate_limited(sim):
    sim.configure(fail_first=1, fail_status=429, fail_retry_after_s=0.4)
    client = LLMClient(_cfg(sim, rpm=60000, backoff_base_s=60, backoff_max_s=120))
    t0 = time.monotonic()
    assert all(r.ok for r in client.run(_reqs(3)))
    assert 0.4 <= time.monotonic() - t0 < 25  # the jittered backoff alone would wait 30-60 s


@pytest.mark.parametrize("configure, cause", [({"api_key": "sk-other"}, "auth"), ({"models": ("other",)}, "model_not_found")])
def test_no_retry_on_401_and_404(sim, configure, cause):
    sim.configure(**configure)
    with pytest.raises(TeacherError) as err:
        LLMClient(_cfg(sim, preflight=False, max_concurrency=1), api_key="sk-x").run(_reqs(5))
    assert err.value.cause == cause
    assert sim.stats()["requests"] == 1  # one attempt, then the run stopped


def test_no_retry_on_400_and_row_marked(sim):
    sim.configure(context_length=30)
    client = LLMClient(_cfg(sim))
    long = chat_request(MODEL, [{"role": "user", "content": "word " * 40}], max_tokens=8)
    res = client.run(_reqs(3) + [long])
    assert [r.status for r in res] == ["ok", "ok", "ok", "context_length"]
    assert res[3].attempts == 1 and "maximum context length is 30 tokens" in res[3].reason
    assert client.last_summary.statuses["context_length"] == 1 and sim.stats()["by_path"]["/v1/chat/completions"] == 4


def test_error_budget_stops_cleanly_with_a_summary(sim):
    sim.configure(error_rate=1.0)
    client = LLMClient(_cfg(sim, max_retries=1, error_budget=0.5, error_budget_min=5, max_concurrency=2))
    with pytest.raises(ErrorBudgetExceeded) as err:
        client.run(_reqs(200))
    msg = str(err.value)
    assert "error_budget 50%" in msg and "retries_exhausted" in msg and "HTTP 50" in msg
    assert isinstance(err.value, CaiError) and err.value.summary.failed >= 5
    assert sim.stats()["requests"] < 50  # it stopped long before burning through the 200


def test_timeouts_are_retried_then_reported(sim):
    sim.configure(hang_rate=1.0, hang_s=1.0)
    res = LLMClient(_cfg(sim, timeout_s=0.1, max_retries=1, error_budget=1.0)).run(_reqs(2))
    assert [r.status for r in res] == ["retries_exhausted"] * 2
    assert res[0].attempts == 2 and "timeout" in res[0].reason


def test_connection_drops_are_retried(sim):
    sim.configure(drop_rate=0.3, seed=3)
    client = LLMClient(_cfg(sim, max_retries=10))
    assert all(r.ok for r in client.run(_reqs(30)))
    st = sim.stats()
    assert st["dropped"] > 0 and st["duplicates"] == 0


def test_client_paces_itself_to_rpm(sim):
    # 30 RPM-per-second: a bucket of 2 refilled at 10/s. The server has the same limit: no 429.
    sim.configure(rpm=600, burst_s=0.2)
    client = LLMClient(_cfg(sim, rpm=600, burst_s=0.2))
    t0 = time.monotonic()
    assert all(r.ok for r in client.run(_reqs(12)))
    assert time.monotonic() - t0 >= 0.9
    assert sim.stats()["rate_limited"] == 0


def test_parse_rate_limit_headers():
    assert parse_duration("6m0s") == 360 and parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5) and parse_duration("1.5") == 1.5
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m30s"}) == 90.0


# ------------------------------------------------------------------ bad input, one message per cause


def test_missing_api_key(monkeypatch):
    with pytest.raises(TeacherError, match="no API key for https://api.openai.com/v1: set OPENAI_API_KEY") as err:
        LLMClient(ClientConfig()).run(_reqs(1))
    assert err.value.cause == "api_key"


def test_unreachable_base_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TeacherError, match=rf"cannot reach the model endpoint http://127.0.0.1:{port}/v1") as err:
        LLMClient(ClientConfig(base_url=f"http://127.0.0.1:{port}/v1", model=MODEL)).run(_reqs(1))
    assert err.value.cause == "unreachable"


def test_wrong_base_url_path(sim):
    with pytest.raises(TeacherError, match=r"/chat/completions does not exist .*base URL is probably wrong") as err:
        LLMClient(ClientConfig(base_url=sim.url, model=MODEL)).run(_reqs(1))  # missing /v1
    assert err.value.cause == "base_url"


def test_model_not_found_message(sim):
    with pytest.raises(TeacherError, match=r"model 'gpt-nope' not found at http://127.0.0.1:\d+/v1"):
        LLMClient(_cfg(sim, model="gpt-nope")).run([chat_request("gpt-nope", [{"role": "user", "content": "x"}])])


def test_bad_replies_become_row_statuses(sim):
    client = LLMClient(_cfg(sim, error_budget=1.0))
    bad = [chat_request(MODEL, [{"role": "user", "content": "[[sim:no_choices]]"}]),
           chat_request(MODEL, [{"role": "user", "content": "[[sim:malformed]]"}])]
    res = client.run(_reqs(2) + bad)
    assert [r.status for r in res] == ["ok", "ok", "no_choices", "malformed_reply"]
    assert "no choices" in res[2].reason and "not a completion" in res[3].reason
    s = client.last_summary
    assert (s.ok, s.statuses["no_choices"], s.statuses["malformed_reply"]) == (2, 1, 1)
    assert "no_choices 1" in s.line() and "malformed_reply 1" in s.line()


def test_sdk_transport_gives_the_same_results(sim):
    reqs = _reqs(5)
    fast = LLMClient(_cfg(sim)).run(reqs)
    sdk = LLMClient(_cfg(sim, transport="sdk")).run(reqs)
    assert [r.text for r in fast] == [r.text for r in sdk]


# --------------------------------------------------------------------------- batch mode


def test_batch_mode_end_to_end_and_no_resubmission(sim, tmp_path):
    sim.configure(batch_delay_s=0.1, context_length=40)
    cfg = _cfg(sim, batch=True, batch_poll_s=0.05)
    reqs = _reqs(6) + [chat_request(MODEL, [{"role": "user", "content": "word " * 50}], max_tokens=8)]
    client = LLMClient(cfg, Journal(tmp_path / "j"))
    res = client.run(reqs)
    assert [r.status for r in res] == ["ok"] * 6 + ["context_length"] and all(r.source == "batch" for r in res)
    assert res[0].text == LLMClient(_cfg(sim)).run(reqs[:1])[0].text  # same reply as a live call
    st = sim.stats()
    assert st["batches"] == 1 and st["batch_requests"] == 6
    assert client.last_summary.cost_usd is None or client.last_summary.cost_usd >= 0
    again = LLMClient(cfg, Journal(tmp_path / "j")).run(reqs)
    assert [r.text for r in again] == [r.text for r in res] and sim.stats()["batches"] == 1


def test_batch_mode_resumes_a_submitted_batch(sim, tmp_path, monkeypatch):
    sim.configure(batch_delay_s=0.3)
    cfg = _cfg(sim, batch=True, batch_poll_s=0.05)

    async def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the pod dies while polling

    monkeypatch.setattr(LLMClient, "_await_batch", crash)
    with pytest.raises(KeyboardInterrupt):
        LLMClient(cfg, Journal(tmp_path / "j")).run(_reqs(4))
    monkeypatch.undo()
    journal = Journal(tmp_path / "j").open()
    assert len(journal.pending_batches()) == 1
    res = LLMClient(cfg, journal).run(_reqs(4))
    assert all(r.ok and r.source == "batch" for r in res)
    assert sim.stats()["batches"] == 1  # polled the same batch, did not submit again


# ------------------------------------------------------------------------------- judge


def _pairs(tmp_path):
    rows = [{"id": records.row_id(i), "prompt": f"q{i}", "response_a": "short" * (1 + i % 2),
             "response_b": "a much longer answer " * (2 - i % 2)} for i in range(6)]
    path = tmp_path / "pairs.jsonl"
    records.write_jsonl(path, rows)
    return path


@pytest.mark.parametrize("mode", ["logprobs", "letter"])
def test_judge_against_the_sim_server(sim, tmp_path, mode):
    llm = OpenAIChatModel(_cfg(sim), journal=str(tmp_path / "journal"))
    result = judge.run(judge.JudgeConfig(mode=mode, test_fraction=0.0, calibration="off"), _pairs(tmp_path), tmp_path, llm)
    m = result.metrics
    assert m["kept"] == 6 and m["flip_rate"] == 0.0 and m["length_bias_rate"] == 1.0  # the sim likes longer answers
    assert sim.stats()["served_total"] == 12  # 6 pairs x 2 orders
    sim.configure(reply="judge-first")  # now a judge that follows the slot
    llm2 = OpenAIChatModel(_cfg(sim))
    m2 = judge.run(judge.JudgeConfig(mode=mode, calibration="off"), _pairs(tmp_path), tmp_path, llm2).metrics
    assert m2["status_order_inconsistent"] == 6 and m2["flip_rate"] == 1.0 and m2["first_slot_rate"] == 1.0


def test_judge_marks_failed_requests(sim, tmp_path):
    sim.configure(context_length=400)
    rows = [{"id": "a", "prompt": "q", "response_a": "x", "response_b": "yy"},
            {"id": "b", "prompt": "q", "response_a": "word " * 500, "response_b": "z"}]
    path = tmp_path / "pairs.jsonl"
    records.write_jsonl(path, rows)
    llm = OpenAIChatModel(_cfg(sim, error_budget=1.0))
    result = judge.run(judge.JudgeConfig(test_fraction=0.0, calibration="off"), path, tmp_path, llm)
    assert result.metrics["status_request_failed"] == 1 and result.metrics["status_ok"] == 1
    verdicts = {v["id"]: v for v in records.read_jsonl(tmp_path / "verdicts.jsonl")}
    assert verdicts["b"]["status"] == "request_failed" and verdicts["b"]["reason"].startswith("context_length:")


def test_load_teacher_honours_overrides_and_env(sim, tmp_path, monkeypatch):
    from cai_core.config.run import ModelConfig, TeacherConfig
    from cai_core.llm import load_teacher

    llm = load_teacher(TeacherConfig(), ModelConfig(), base_url=sim.base_url, model_name=MODEL,
                       journal=str(tmp_path / "j"))
    assert isinstance(llm, OpenAIChatModel) and llm.client.base_url == sim.base_url and llm.name == MODEL
    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
    llm = load_teacher(TeacherConfig(model=MODEL), ModelConfig())
    assert isinstance(llm, OpenAIChatModel) and llm.client.base_url == sim.base_url
    assert llm.chat([[{"role": "user", "content": "hi"}]], [judge.Sampling(max_new_tokens=4)])[0]


def test_judge_file_keeps_its_journal_beside_the_output(sim, tmp_path):
    from cai_core.cli.commands.judge import judge_file

    out = tmp_path / "out"
    pairs = _pairs(tmp_path)
    r1 = judge_file(pairs, out, judge.JudgeConfig(test_fraction=0.0, calibration="off"), ClientConfig(), base_url=sim.base_url, model=MODEL)
    assert (out / "journal").is_dir() and (out / "metrics.json").exists()
    assert r1.metrics["teacher_requests_sent"] == 12
    r2 = judge_file(pairs, out, judge.JudgeConfig(test_fraction=0.0, calibration="off"), ClientConfig(), base_url=sim.base_url, model=MODEL)
    assert r2.metrics["teacher_requests_from_journal"] == 12 and r2.metrics["teacher_requests_sent"] == 0
    assert sim.stats()["served_total"] == 12


def test_cai_judge_command(sim, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cai_core.cli import cli

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    out, journal = tmp_path / "verdicts", tmp_path / "elsewhere" / "journal"
    args = ["judge", "--pairs", str(_pairs(tmp_path)), "--out", str(out), "--base-url", sim.base_url,
            "--model", MODEL, "--set", "judge.test_fraction=0.0", "--journal", str(journal)]
    # The simulated server is no judge: with calibration fail (the cluster default) it fails its control pairs,
    # in one line; the laptop default (warn) goes on and marks it.
    refused = CliRunner().invoke(cli, args[:-2] + ["--journal", str(tmp_path / "refused"), "--set",
                                                   "judge.calibration=fail"])
    message = str(refused.exception)  # `cai` (run_command) prints it as one line and exits 2
    assert refused.exception.exit_code == 2 and "control pairs" in message and "would be noise" in message
    warned = CliRunner().invoke(cli, args[:-2] + ["--journal", str(tmp_path / "warned")], catch_exceptions=False)
    assert warned.exit_code == 0 and json.loads(warned.stdout)["calibrated"] == 0.0
    args += ["--set", "judge.calibration=off"]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    metrics = json.loads(first.stdout)
    assert metrics["teacher_requests_sent"] == 12 and journal.is_dir() and not (out / "journal").exists()
    assert {p.name for p in out.iterdir()} >= {"train.jsonl", "verdicts.jsonl", "metrics.json"}
    again = json.loads(CliRunner().invoke(cli, args, catch_exceptions=False).stdout)
    assert again["teacher_requests_from_journal"] == 12 and again["teacher_requests_sent"] == 0


def test_client_config_is_documented_and_validated():
    import dataclasses

    from cai_core.config.base import field_docs
    from cai_core.errors import ConfigError

    assert set(field_docs(ClientConfig)) == {f.name for f in dataclasses.fields(ClientConfig)}
    with pytest.raises(ConfigError, match=r"teacher.base_url: must start with http"):
        ClientConfig.from_dict({"base_url": "localhost:8000"}, path="teacher")
    with pytest.raises(ConfigError, match=r"error_budget: must be in \(0, 1\]"):
        ClientConfig.from_dict({"error_budget": 0})
    assert ClientConfig(model="gpt-4o-mini-2024-07-18").prices() == (0.15, 0.60)
    assert ClientConfig(model="my-local-model").prices() is None
