"""Preference rounds (dpo.iterations): the names of a round's steps, and what the rounds share or not."""
from __future__ import annotations

import json

import pytest

from cai_core.config.loading import load_run_config
from cai_core.errors import ConfigError, StageError
from cai_core.runtime.engine import execute, payload
from cai_core.runtime.steps import ROUND_STEPS, STEPS, round_name, round_names, split_round, step_of


def test_round_one_keeps_the_plain_names_and_later_rounds_are_numbered():
    assert round_names(1) == ROUND_STEPS
    assert round_names(3) == ("pairs_r3", "clean_pairs_r3", "judge_r3", "dpo_r3", "gate_r3")
    assert split_round("clean_pairs_r2") == ("clean_pairs", 2)
    assert split_round("dpo") == ("dpo", 1)
    assert step_of("judge_r12") is STEPS["judge"]


@pytest.mark.parametrize("name", ["sft_r2", "dpo_r1", "dpo_r0", "dpo_r02", "dpo_rx", "dpo_", "nope"])
def test_names_that_are_no_round_step_are_refused(name):
    with pytest.raises(KeyError):
        split_round(name)


def test_only_round_steps_have_rounds():
    with pytest.raises(KeyError, match="not a step of a preference round"):
        round_name("sft", 2)


def test_iterations_reach_no_step_so_round_one_is_reused():
    one = load_run_config(None, [])
    two = load_run_config(None, ["dpo.iterations=2"])
    assert two.dpo.iterations == 2
    for step in STEPS:
        assert payload(one, step) == payload(two, step), step
    assert "iterations" not in json.loads(payload(two, "dpo"))["dpo"]
    # the other dpo settings still reach the step (and its fingerprint)
    assert payload(load_run_config(None, ["dpo.beta=0.2"]), "dpo") != payload(one, "dpo")


@pytest.mark.parametrize("value", ["0", "9", "-1"])
def test_iterations_out_of_range_name_the_key(value):
    with pytest.raises(ConfigError, match=r"dpo\.iterations: must be in \[1, 8\]"):
        load_run_config(None, [f"dpo.iterations={value}"])


def test_an_unknown_step_name_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="unknown step 'dpo_r1'"):
        execute("dpo_r1", "{}", {}, str(tmp_path / "out"), str(tmp_path / "run"))
