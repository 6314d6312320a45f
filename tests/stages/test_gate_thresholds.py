"""The gate's threshold boundaries: a max check is off only when negative, so 0 means none allowed; a min check
is off at 0 (gate.GateConfig's field docs)."""
from __future__ import annotations

import pytest

from cai_core.errors import ConfigError
from cai_core.stages.gate import CHECKS, GateConfig, check

CLEAN = {"rep_2": 0.0, "rep_3": 0.0, "rep_4": 0.0, "tail_loop_rate": 0.0, "distinct_2": 0.9, "empty_rate": 0.0}
MAX_CHECKS = [(metric, name) for metric, name, kind in CHECKS if kind == "max"]


def _off_except(**kw) -> GateConfig:
    """Every check off, but those given."""
    off = {name: (-1.0 if kind == "max" else 0.0) for _, name, kind in CHECKS}
    return GateConfig(**{**off, "min_distinct_2_vs_base": 0.0, **kw})


@pytest.mark.parametrize("metric,name", MAX_CHECKS)
def test_a_max_threshold_of_zero_allows_none(metric, name):
    cfg = _off_except(**{name: 0.0})
    assert check(cfg, {**CLEAN, metric: 0.0}) == []  # exactly none: passes
    reasons = check(cfg, {**CLEAN, metric: 0.01})
    assert reasons == [f"{metric} 0.01 > {name} 0"], "0 is a threshold (none allowed), not 'off'"


@pytest.mark.parametrize("metric,name", MAX_CHECKS)
def test_a_negative_max_threshold_is_off(metric, name):
    assert check(_off_except(**{name: -0.5}), {**CLEAN, metric: 1.0}) == []
    assert check(_off_except(**{name: -1e-9}), {**CLEAN, metric: 1.0}) == []


@pytest.mark.parametrize("metric,name", MAX_CHECKS)
def test_a_max_threshold_is_inclusive(metric, name):
    cfg = _off_except(**{name: 0.25})
    assert check(cfg, {**CLEAN, metric: 0.25}) == []
    assert len(check(cfg, {**CLEAN, metric: 0.2501})) == 1


def test_min_thresholds_are_off_at_zero_and_inclusive_above():
    assert check(_off_except(min_distinct_2=0.0), {**CLEAN, "distinct_2": 0.0}) == []
    cfg = _off_except(min_distinct_2=0.3)
    assert check(cfg, {**CLEAN, "distinct_2": 0.3}) == []
    assert check(cfg, {**CLEAN, "distinct_2": 0.29}) == ["distinct_2 0.29 < min_distinct_2 0.3"]
    ratio = _off_except(min_distinct_2_vs_base=0.5)
    assert check(ratio, {**CLEAN, "distinct_2": 0.3}, {"distinct_2": 0.6}) == []
    assert len(check(ratio, {**CLEAN, "distinct_2": 0.29}, {"distinct_2": 0.6})) == 1
    assert check(_off_except(min_distinct_2_vs_base=0.0), {**CLEAN, "distinct_2": 0.01}, {"distinct_2": 0.9}) == []


def test_every_check_off_passes_anything_and_the_config_accepts_the_boundaries():
    worst = {"rep_2": 1.0, "rep_3": 1.0, "rep_4": 1.0, "tail_loop_rate": 1.0, "distinct_2": 0.0, "empty_rate": 1.0}
    assert check(_off_except(), worst, {"distinct_2": 1.0}) == []
    all_zero = GateConfig(**{name: 0.0 for _, name, _ in CHECKS})
    assert len(check(all_zero, worst)) == len(MAX_CHECKS)
    with pytest.raises(ConfigError):
        GateConfig(min_distinct_2=-0.1)
