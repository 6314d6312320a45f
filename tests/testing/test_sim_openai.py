"""The simulated OpenAI-compatible server, checked through the real `openai` SDK (loopback only)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import openai
import pytest

from cai_core.testing.sim_openai import SimConfig, SimServer, request_hash

MSG = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def sim():
    with SimServer(SimConfig()) as server:
        yield server


def _client(sim, **kw):
    return openai.OpenAI(base_url=sim.base_url, api_key=kw.pop("api_key", "sk-test"), max_retries=0, **kw)


def test_chat_with_logprobs_is_deterministic_and_counted(sim):
    c = _client(sim)
    a = c.chat.completions.create(model="sim-model", messages=MSG, max_tokens=12, logprobs=True, top_logprobs=3)
    b = c.chat.completions.create(model="sim-model", messages=MSG, max_tokens=12, logprobs=True, top_logprobs=3)
    assert a.choices[0].message.content == b.choices[0].message.content != ""
    top = a.choices[0].logprobs.content[0].top_logprobs
    assert len(top) == 3 and top[0].logprob >= top[1].logprob
    assert a.usage.prompt_tokens > 0 and a.usage.completion_tokens > 0
    st = sim.stats()
    assert st["served_total"] == 2 and st["distinct"] == 1 and st["duplicates"] == 1


def test_completions_and_models(sim):
    c = _client(sim)
    r = c.completions.create(model="sim-model", prompt="Once upon a time", max_tokens=5)
    assert r.choices[0].text
    assert {m.id for m in c.models.list().data} == {"sim-model", "gpt-4o-mini"}


def test_judge_prompts_get_letters_and_ab_logprobs(sim):
    content = "Option A:\n<<<\nshort\n>>>\n\nOption B:\n<<<\na much longer answer\n>>>\n\nAnswer with A or B."
    r = _client(sim).chat.completions.create(model="sim-model", messages=[{"role": "user", "content": content}],
                                             max_tokens=1, logprobs=True, top_logprobs=5)
    assert r.choices[0].message.content == "B"  # judge-longer
    top = {t.token: t.logprob for t in r.choices[0].logprobs.content[0].top_logprobs}
    assert top["B"] > top["A"]


def test_rate_limit_answers_429_with_retry_after_and_ratelimit_headers(sim):
    sim.configure(rpm=60, burst_s=2.0)  # a bucket of 2 requests, refilled 1 per second
    c = _client(sim)
    for i in range(2):
        c.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": f"x{i}"}], max_tokens=4)
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "x3"}], max_tokens=4)
    h = err.value.response.headers
    # the refused request is charged too (charge_rejected), so the bucket needs up to 2 s for the next one
    assert float(h["retry-after"]) >= 1 and 1000 < int(h["retry-after-ms"]) <= 2000
    assert h["x-ratelimit-limit-requests"] == "60" and h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"].endswith("s")
    assert sim.stats()["rate_limited"] == 1


def test_token_limit_counts_prompt_and_max_tokens(sim):
    sim.configure(tpm=600, burst_s=6.0)  # a bucket of 60 tokens
    c = _client(sim)
    c.chat.completions.create(model="sim-model", messages=MSG, max_tokens=20)  # ~30 tokens
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="sim-model", messages=MSG + MSG, max_tokens=40)
    assert "tokens" in err.value.message


def test_checks_key_model_and_context(sim):
    sim.configure(api_key="sk-right", context_length=50)
    with pytest.raises(openai.AuthenticationError):
        _client(sim, api_key="sk-wrong").chat.completions.create(model="sim-model", messages=MSG, max_tokens=4)
    c = _client(sim, api_key="sk-right")
    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.create(model="gpt-nope", messages=MSG, max_tokens=4)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="sim-model", messages=MSG, max_tokens=100)
    assert err.value.code == "context_length_exceeded"


def test_fault_markers_and_random_faults(sim):
    c = _client(sim)
    r = c.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "[[sim:no_choices]]"}], max_tokens=4)
    assert r.choices == []
    req = urllib.request.Request(sim.base_url + "/chat/completions", method="POST", headers={"content-type": "application/json"},
                                 data=json.dumps({"model": "sim-model", "messages": [{"role": "user", "content": "[[sim:malformed]]"}]}).encode())
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
        with pytest.raises(ValueError):
            json.loads(resp.read())
    sim.configure(drop_rate=1.0)
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="sim-model", messages=MSG, max_tokens=4)
    sim.configure(drop_rate=0.0, error_rate=1.0)
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="sim-model", messages=MSG, max_tokens=4)
    st = sim.stats()
    assert st["dropped"] == 1 and st["served_total"] == 2  # no_choices and malformed were 200s


def test_fail_first_then_serve(sim):
    sim.configure(fail_first=2, fail_status=503)
    c = _client(sim)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="sim-model", messages=MSG, max_tokens=4)
    c.chat.completions.create(model="sim-model", messages=MSG, max_tokens=4)
    st = sim.stats()
    assert st["served_total"] == 1 and st["retried"] == 1 and st["attempts_total"] == 3


def test_files_and_batches_end_to_end(sim):
    sim.configure(batch_delay_s=0.2)
    c = _client(sim)
    body = {"model": "sim-model", "messages": MSG, "max_tokens": 6}
    lines = [{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": body},
             {"custom_id": "r2", "method": "POST", "url": "/v1/chat/completions", "body": {**body, "model": "nope"}}]
    f = c.files.create(file=("in.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode()), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert b.status == "validating"
    deadline = time.monotonic() + 5
    while b.status not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        b = c.batches.retrieve(b.id)
    assert b.status == "completed" and b.request_counts.completed == 1 and b.request_counts.failed == 1
    out = [json.loads(x) for x in c.files.content(b.output_file_id).content.splitlines()]
    err = [json.loads(x) for x in c.files.content(b.error_file_id).content.splitlines()]
    assert out[0]["custom_id"] == "r1" and out[0]["response"]["body"]["choices"][0]["message"]["content"]
    assert err[0]["custom_id"] == "r2" and err[0]["response"]["status_code"] == 404
    st = sim.stats()
    assert st["batch_requests"] == 1 and st["served"] == {request_hash(body): 1}


def test_standalone_process_prints_url_and_stops_on_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "cai_core.testing.sim_openai", "--port", "0", "--rpm", "100"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("sim-openai listening on http://127.0.0.1:")
        url = line.split()[-1]
        with urllib.request.urlopen(url.replace("/v1", "/_sim/stats"), timeout=5) as resp:
            assert json.loads(resp.read())["config"]["rpm"] == 100
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
