"""The report page in a real headless browser: it renders, every section is there, the plots decode.

Needs `chromium` (Debian: apt-get install -y chromium). Without it the test is skipped,
except under CI (env CI set), where a missing browser fails the run.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cai_core import records
from cai_core.stages import evaluate, gate, report

from tests.fakes import FakeChatModel  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-images', imgs.map(function (i) {
    return i.complete ? i.naturalWidth + 'x' + i.naturalHeight : 'pending'; }).join(','));
  document.body.setAttribute('data-h2', Array.prototype.map.call(document.querySelectorAll('h2'),
    function (h) { return h.textContent; }).join('|'));
  document.body.setAttribute('data-tables', document.querySelectorAll('table').length);
});
</script>"""


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("no headless browser found (install one: apt-get install -y chromium); CI needs it")
    pytest.skip("no chromium on this machine")


def _run_browser(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


class Judge(FakeChatModel):
    def choice_logprobs(self, conversations, choices):
        return [[-abs(i - (len(choices) * 2) // 3) for i in range(len(choices))] for _ in conversations]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    prompts = tmp / "prompts.jsonl"
    records.write_jsonl(prompts, [{"id": f"e{i}", "prompt": f"question {i}", "category": ["helpful", "red_team"][i % 2]}
                                  for i in range(6)])
    models = {"base": "b", "sft": "s", "dpo": "d"}
    loop = FakeChatModel(reply=lambda t, s: "Happy to help! Happy to help! Happy to help!")
    fine = FakeChatModel()
    ev = evaluate.run(evaluate.EvaluateConfig(mt_bench_questions=8, red_team_max=8, benign_max=6, max_new_tokens=16),
                      prompts, models, tmp / "evaluate", load_model=lambda p: loop if p == "b" else fine, judge=Judge())
    records.write_json(tmp / "evaluate" / "_stage.json", {"metrics": ev.finite_metrics(), "details": ev.details})
    g = gate.run(gate.GateConfig(probes=4), prompts, models, tmp / "gate",
                 load_model=lambda p: loop if p == "b" else fine)
    records.write_json(tmp / "gate" / "_stage.json", {"metrics": g.metrics, "details": g.details})
    dirs = {"evaluate": tmp / "evaluate", "gate": tmp / "gate"}
    for stage, keys in (("sft", ["loss", "grad_norm", "learning_rate"]),
                        ("dpo", ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                                 "entropy", "grad_norm"])):
        dirs[stage] = tmp / stage
        dirs[stage].mkdir()
        records.write_jsonl(dirs[stage] / "train_log.jsonl",
                            [{"step": s, **{k: 1.0 / s + 0.01 * j for j, k in enumerate(keys)}} for s in range(1, 11)])
    out = tmp / "out"
    result = report.run(report.ReportConfig(title="browser check"), dirs, out)
    return out, result


def test_report_renders_with_its_plots(page, tmp_path):
    exe = browser()
    out, result = page
    html = (out / "report.html").read_text()
    assert result.metrics["plots"] == 1 + 3 + 6  # evaluation + SFT curves + DPO curves
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = _run_browser(exe, tmp_path / "profile-dom", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert "<h1>browser check</h1>" in text
    images = text.split('data-images="', 1)[1].split('"', 1)[0].split(",")
    assert len(images) == 10, images
    for size in images:  # every plot decoded as a real image
        w, h = (int(x) for x in size.split("x"))
        assert w >= 200 and h >= 150, size
    headings = text.split('data-h2="', 1)[1].split('"', 1)[0].split("|")
    for section in ("Collapse gate", "Evaluation", "Data cleaning", "Judge", "Training curves", "Examples",
                    "All stage metrics"):
        assert section in headings
    assert int(text.split('data-tables="', 1)[1].split('"', 1)[0]) >= 8
    assert "MT-Bench avg" in text and "ASR [95% CI]" in text and "Happy to help!" in text

    shot = tmp_path / "report.png"
    run = _run_browser(exe, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2400",
                       (out / "report.html").as_uri())
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2400)
    raw = img.resize((320, 600)).tobytes()
    pixels = [tuple(raw[i:i + 3]) for i in range(0, len(raw), 3)]
    ink = sum(1 for r, g, b in pixels if r + g + b < 600) / len(pixels)
    plot_blue = sum(1 for r, g, b in pixels if b > 150 and r < 90 and 90 < g < 150)  # matplotlib's C0 (#1f77b4)
    assert ink > 0.02, f"the page looks blank ({ink:.3f} of pixels with ink)"
    assert plot_blue > 20, "no plot colours on the rendered page"
    if os.environ.get("CAI_KEEP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["CAI_KEEP_SCREENSHOT"])


def test_markdown_inlines_the_same_plots(page):
    out, _ = page
    md = (out / "report.md").read_text()
    links = [line.split("](", 1)[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    prefix = "data:image/png;base64,"
    assert len(links) == 10 and all(link.startswith(prefix) for link in links)  # renders alone in the Kubeflow UI
    plots = sorted(p.read_bytes() for p in (out / "plots").glob("*.png"))
    assert sorted(base64.b64decode(link[len(prefix):]) for link in links) == plots
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"base", "sft", "dpo"} and metrics["verdict"]["gate"] in ("pass", "fail", "flag")
    assert metrics["models"]["base"]["gate"] == "fail" and metrics["models"]["base"]["tail_loop_rate"] > 0.5
