"""The report's numbers are the run's numbers, and untrusted text in it stays text.

The evaluation table of report.html and report.md is read back cell by cell and compared with metrics.json
(and with the evaluate step's metrics it came from); every figure is distinct, so a column that shows the
wrong metric (over-refusal under ASR, say) fails. Model answers flow into the report's tables: a `<script>`
in one must come out as text in both the HTML and the Markdown.
"""
from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from cai_core.stages import report
from cai_core.stages.report import ReportConfig

SCRIPT = "<script>alert('pwned')</script>"
ANSWER = f"Sure! {SCRIPT} <img src=x onerror=alert(1)> & more | cells"

FIGURES = {
    "base": {"mt_bench_t1": 4.25, "mt_bench_t2": 3.75, "mt_bench_avg": 4.0, "asr": 0.625, "asr_ci_low": 0.5,
             "asr_ci_high": 0.75, "asr_n": 16, "over_refusal": 0.0625, "over_refusal_ci_low": 0.0125,
             "over_refusal_ci_high": 0.1875, "over_refusal_n": 16, "rep_2": 0.21, "rep_3": 0.17, "rep_4": 0.13,
             "distinct_1": 0.41, "distinct_2": 0.61, "tail_loop_rate": 0.3125},
    "dpo": {"mt_bench_t1": 5.5, "mt_bench_t2": 4.5, "mt_bench_avg": 5.0, "asr": 0.25, "asr_ci_low": 0.125,
            "asr_ci_high": 0.375, "asr_n": 16, "over_refusal": 0.4375, "over_refusal_ci_low": 0.3125,
            "over_refusal_ci_high": 0.5625, "over_refusal_n": 16, "rep_2": 0.11, "rep_3": 0.07, "rep_4": 0.03,
            "distinct_1": 0.47, "distinct_2": 0.67, "tail_loop_rate": 0.1875},
}


class _Tables(HTMLParser):
    """Every <table> of a page: (class, header cells, body rows of cell texts)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables, self._cell, self._row = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append((dict(attrs).get("class", ""), [], []))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            _, head, body = self.tables[-1]
            (body if head else head).extend([self._row] if head else self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture
def built(tmp_path):
    metrics = {f"{m}.{k}": v for m, figs in FIGURES.items() for k, v in figs.items()}
    metrics.update({"mt_bench_questions": 8, "red_team_prompts": 16, "benign_prompts": 16})
    evaluate = {"metrics": metrics,
                "details": {"per_model": {"base": {}, "dpo": {}}, "models": {"base": "b", "dpo": "d"},
                            "gallery": [{"model": "dpo", "set": "eval", "prompt": "Say hi <b>bold</b>",
                                         "response": ANSWER, "rep_3": 0.5}]}}
    gate = {"verdict": "pass", "promoted": True, "candidate": "dpo", "reasons": [], "probes": 4,
            "per_model": {"base": {"pass": False, "metrics": {}, "reasons": ["x"]},
                          "dpo": {"pass": True, "metrics": {}, "reasons": []}},
            "thresholds": {}, "gallery": []}
    stages = {"evaluate": evaluate, "gate": {"metrics": {}, "details": gate}}
    report.run(ReportConfig(), {}, tmp_path, stages=stages)
    page = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    return page, md, json.loads((tmp_path / "metrics.json").read_text())


def _g(v) -> str:
    return f"{v:.4g}"


def _expected_row(name: str, m: dict, gate: str) -> list[str]:
    return [name, _g(m["mt_bench_t1"]), _g(m["mt_bench_t2"]), _g(m["mt_bench_avg"]),
            f"{m['asr']:.3f} [{m['asr_ci_low']:.3f}, {m['asr_ci_high']:.3f}]",
            f"{m['over_refusal']:.3f} [{m['over_refusal_ci_low']:.3f}, {m['over_refusal_ci_high']:.3f}]",
            _g(m["rep_2"]), _g(m["rep_3"]), _g(m["rep_4"]), _g(m["distinct_1"]), _g(m["distinct_2"]),
            _g(m["tail_loop_rate"]), gate]


HEADER = ["model", "MT-Bench T1", "MT-Bench T2", "MT-Bench avg", "ASR [95% CI]", "over-refusal [95% CI]", "rep-2",
          "rep-3", "rep-4", "distinct-1", "distinct-2", "tail-loop", "gate"]


def test_metrics_json_holds_the_evaluated_figures(built):
    _, _, metrics = built
    for name, figs in FIGURES.items():
        for key, value in figs.items():
            assert metrics["models"][name][key] == value, (name, key)
    assert metrics["models"]["base"]["gate"] == "fail" and metrics["models"]["dpo"]["gate"] == "pass"


def test_html_evaluation_table_shows_the_metrics_json_values(built):
    page, _, metrics = built
    parser = _Tables()
    parser.feed(page)
    tables = [t for t in parser.tables if t[0] == "evaluation"]
    assert len(tables) == 1
    _, head, body = tables[0]
    assert head == HEADER
    assert body == [_expected_row(n, metrics["models"][n], metrics["models"][n]["gate"]) for n in ("base", "dpo")]
    # and the same against the source figures (not only the report's own metrics.json)
    assert body[1][4] == "0.250 [0.125, 0.375]" and body[1][5] == "0.438 [0.312, 0.562]"


def test_markdown_evaluation_table_shows_the_same_values(built):
    _, md, metrics = built
    lines = md.splitlines()
    start = lines.index("| " + " | ".join(HEADER) + " |")
    rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines[start + 2:start + 4]]
    assert rows == [_expected_row(n, metrics["models"][n], metrics["models"][n]["gate"]) for n in ("base", "dpo")]


def test_a_script_in_a_model_answer_is_escaped_in_html(built):
    page, _, _ = built
    assert "<script" not in page.lower() and "<b>bold" not in page
    assert page.count("<img") == page.count("<figure>")  # the report's own plots only, not the answer's <img>
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    parser = _Tables()
    parser.feed(page)
    gallery = [t for t in parser.tables if t[0] == "gallery"]
    assert gallery and [r[3] for r in gallery[0][2]] == [ANSWER]  # shown as the very text the model wrote


def test_a_script_in_a_model_answer_is_escaped_in_markdown(built):
    _, md, _ = built
    assert "<script" not in md.lower() and "<img" not in md.lower() and "<b>" not in md
    row = next(line for line in md.splitlines() if "alert(" in line)
    assert "&lt;script>alert('pwned')&lt;/script>" in row and "&amp; more \\| cells" in row
