"""Watch errors the API server really sends, against the launcher: a watch whose resourceVersion is too old
gets 410 Gone (as an ``ERROR`` event inside the stream, or as the response to the watch request); the launcher
must re-read the job and watch again, and follow it to the end. Any other watch error is a clear failure."""
from __future__ import annotations

import pytest

from cai_core.errors import CaiError
from cai_core.k8s.launcher import job_state
from tests.fake_k8s import FakeK8s
from tests.k8s.test_launcher import NS, _launcher, _manifest


@pytest.fixture
def fake():
    server = FakeK8s(step_s=0.1).start()
    yield server
    server.stop()


def _job_gets(fake, name):
    return [p for m, p in fake.requests if m == "GET" and p.split("?")[0].endswith(f"/pytorchjobs/{name}")]


def _watches(fake):
    return [p for m, p in fake.requests if m == "GET" and "watch=true" in p.lower()]


@pytest.mark.parametrize("how", ["event", "http"])
def test_a_410_gone_watch_is_resumed_from_a_fresh_read(fake, how):
    fake.watch_errors = [(how, 410), (how, 410), (how, 410)]
    manifest = _manifest()
    name = manifest["metadata"]["name"]
    final = _launcher(fake, poll_interval_s=0.3).run(manifest)
    assert job_state(final).phase == "Succeeded"
    assert fake.watch_errors_sent == [(how, 410)] * 3 and not fake.watch_errors
    # after each 410 the launcher reads the job again (a new resourceVersion) before it watches again
    assert len(_job_gets(fake, name)) >= 4 and len(_watches(fake)) >= 4


def test_a_410_does_not_lose_the_end_of_the_job(fake):
    """The job finishes while the watch is failing: the fresh read sees it, no watch event is needed."""
    fake.scenario = "succeed"
    fake.watch_errors = [("event", 410)] * 40
    final = _launcher(fake, poll_interval_s=0.2).run(_manifest())
    assert job_state(final).phase == "Succeeded"


@pytest.mark.parametrize("how", ["event", "http"])
def test_another_watch_error_is_a_clear_failure(fake, how):
    fake.scenario = "hang"
    fake.watch_errors = [(how, 500)]
    manifest = _manifest()
    # the job never ends ("hang"): a launcher that swallowed the error would wait for it until its own timeout
    with pytest.raises(CaiError, match=rf"watch pytorchjob {NS}/{manifest['metadata']['name']}.*500"):
        _launcher(fake, poll_interval_s=0.3, timeout_s=30).run(manifest)
    assert fake.watch_errors_sent == [(how, 500)]
