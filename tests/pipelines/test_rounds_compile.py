"""`dpo.iterations: 2` compiles to a real DAG: round 2 runs inside round 1's passing gate, samples from and trains
against round 1's DPO model, and each round's gate decides which model is evaluated and reported."""
from __future__ import annotations

import re

import pytest

from tests.pipelines.test_compile import _compile


def _walk(spec):
    """task name -> (task, the `step` it runs, the trigger condition of its DAG), over every DAG."""
    dags = {"root": spec["root"]["dag"]} | {n: c["dag"] for n, c in spec["components"].items() if "dag" in c}
    triggers = {}  # sub-DAG component -> the condition that starts it
    for dag in dags.values():
        for task in dag["tasks"].values():
            if "triggerPolicy" in task:
                triggers[task["componentRef"]["name"]] = task["triggerPolicy"]["condition"]
    tasks = {}
    for dag_name, dag in dags.items():
        for name, task in dag["tasks"].items():
            params = task.get("inputs", {}).get("parameters", {})
            step = params.get("step", {}).get("runtimeValue", {}).get("constant")
            tasks[name] = (task, step, triggers.get(dag_name))
    return tasks


def _source(tasks, task, artifact):
    """The step whose output feeds `artifact` of `task`, through the sub-DAG channels."""
    ref = task["inputs"]["artifacts"][artifact]
    if "taskOutputArtifact" in ref:
        producer, key = ref["taskOutputArtifact"]["producerTask"], ref["taskOutputArtifact"]["outputArtifactKey"]
    else:
        channel = ref["componentInputArtifact"].removeprefix("pipelinechannel--")
        producer, key = next((t, channel[len(t) + 1:]) for t in sorted(tasks, key=len, reverse=True)
                             if channel.startswith(t + "-"))
    return tasks[producer][1] or producer, key


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    _, _, _, (spec, _) = _compile(tmp_path_factory.mktemp("rounds"), ["dpo.iterations=2"])
    tasks = _walk(spec)
    by_step: dict[str, list] = {}
    for task, step, trigger in tasks.values():
        component = re.sub(r"^comp-|-\d+$", "", task["componentRef"]["name"])  # comp-evaluate-2 -> evaluate
        by_step.setdefault(step or component, []).append((task, trigger))
    return tasks, by_step


def test_round_two_samples_from_and_trains_against_round_one(two_rounds):
    tasks, by_step = two_rounds
    for step in ("pairs_r2", "clean_pairs_r2", "judge_r2", "dpo_r2", "gate_r2"):
        assert len(by_step[step]) == 1, step
    one = lambda step: by_step[step][0][0]  # noqa: E731
    assert _source(tasks, one("pairs_r2"), "model") == ("dpo", "model")
    assert _source(tasks, one("clean_pairs_r2"), "rows") == ("pairs_r2", "pairs_out")
    assert _source(tasks, one("judge_r2"), "pairs") == ("clean_pairs_r2", "cleaned")
    assert _source(tasks, one("dpo_r2"), "preferences") == ("judge_r2", "preferences")
    assert _source(tasks, one("dpo_r2"), "sft_model") == ("dpo", "model")  # start and reference
    assert _source(tasks, one("gate_r2"), "dpo_model") == ("dpo_r2", "model")
    assert _source(tasks, one("gate_r2"), "sft_model") == ("sft", "model")


def test_round_two_runs_only_when_round_one_passes(two_rounds):
    _, by_step = two_rounds
    trigger = by_step["dpo_r2"][0][1]
    assert trigger == "inputs.parameter_values['pipelinechannel--gate-verdict'] != 'fail'"
    assert by_step["dpo"][0][1] is None  # round 1 is unconditional


def test_the_last_passing_round_is_evaluated(two_rounds):
    tasks, by_step = two_rounds
    evaluated = {(_source(tasks, t, "dpo_model"), trigger) for t, trigger in by_step["evaluate"]}
    assert evaluated == {
        (("dpo_r2", "model"), "inputs.parameter_values['pipelinechannel--gate-2-verdict'] != 'fail'"),
        (("dpo", "model"), "!(inputs.parameter_values['pipelinechannel--gate-2-verdict'] != 'fail')")}
    reports = {(_source(tasks, t, "gate"), _source(tasks, t, "dpo"), "evaluate" in t["inputs"]["artifacts"])
               for t, _ in by_step["report"]}
    assert reports == {((("gate_r2", "result")), ("dpo_r2", "model"), True),  # both rounds passed
                       (("gate", "result"), ("dpo", "model"), True),  # round 2 failed: round 1 is promoted
                       (("gate", "result"), ("dpo", "model"), False)}  # round 1 failed: nothing is
    for task, _ in by_step["report"]:
        assert task["inputs"]["parameters"]["rounds"]["runtimeValue"]["constant"] == 2


def test_each_round_step_runs_on_its_stage_pod(tmp_path):
    """A round's tasks get their stage's image, resources and labels (the cluster settings of pairs, dpo, ...)."""
    from tests.pipelines.test_compile import tasks_by_step
    _, _, _, docs = _compile(tmp_path, ["dpo.iterations=3"])
    by_label = tasks_by_step(docs)
    for step in ("pairs", "clean_pairs", "judge", "dpo", "gate"):
        steps = sorted(t["inputs"]["parameters"]["step"]["runtimeValue"]["constant"] for t, _, _ in by_label[step])
        assert steps == sorted([step, f"{step}_r2", f"{step}_r3"])
        images = {c["image"] for _, c, _ in by_label[step]}
        assert len(images) == 1, step
