import pytest

from cai_core.config.docs import reference
from cai_core.config.loading import dump_yaml, load_run_config
from cai_core.config.run import RunConfig
from cai_core.errors import ConfigError, InputError


def test_embedded_default_loads_and_round_trips():
    cfg = load_run_config()
    assert cfg.model.name_or_path == "tiny"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_json(cfg.to_json()) == cfg


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("revise:\n  rounds: 2\nclean:\n  variant: none\n")
    cfg = load_run_config(path, ["revise.rounds=3", "judge.min_margin=0.2"])
    assert cfg.revise.rounds == 3 and cfg.clean.variant == "none" and cfg.judge.min_margin == 0.2


@pytest.mark.parametrize("text, needle", [
    ("revise:\n  roundz: 2\n", "revise.roundz: unknown config key (did you mean 'revise.rounds'?)"),
    ("revise:\n  rounds: two\n", "revise.rounds: expected an integer, got 'two'"),
    ("revise:\n  rounds: 0\n", "revise.rounds: must be >= 1"),
    ("clean:\n  variant: sparkling\n", "clean.variant: expected one of"),
    ("judge:\n  min_margin: [1]\n", "judge.min_margin: expected a number"),
    ("nonsense: 1\n", "nonsense: unknown config key"),
    ("revise: 3\n", "revise: expected a mapping"),
])
def test_bad_config_names_the_key(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_bad_override_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="sft.learning_rat"):
        load_run_config(None, ["sft.learning_rat=1"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_run_config(None, ["sft"])
    bad = tmp_path / "broken.yaml"
    bad.write_text("revise:\n  rounds: [1, 2\n")
    with pytest.raises(InputError, match=r"broken.yaml:\d+: not valid YAML"):
        load_run_config(bad)
    with pytest.raises(InputError, match="config file not found"):
        load_run_config(tmp_path / "missing.yaml")


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="revise.rounds: expected an integer, got True"):
        load_run_config(None, ["revise.rounds=true"])


def test_dump_is_loadable(tmp_path):
    cfg = load_run_config(None, ["revise.rounds=2"])
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_run_config(path) == cfg


def test_reference_documents_every_key():
    ref = reference()
    for line in ref.splitlines()[2:]:
        key, meaning = line.split("|")[1].strip(), line.split("|")[4].strip()
        assert meaning, f"{key} has no #: documentation"
    assert "`judge.min_margin`" in ref and "`revise.rounds`" in ref


def test_exponent_floats_read_as_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sft:\n  learning_rate: 1e-5\n")
    assert load_run_config(path, ["dpo.learning_rate=5e-7"]).sft.learning_rate == 1e-5
    assert load_run_config(None, ["dpo.learning_rate=5e-7"]).dpo.learning_rate == 5e-7


def test_yaml_reads_only_true_and_false_as_booleans(tmp_path):
    """YAML 1.2 booleans: `off` is the string value judge.calibration takes, not False (YAML 1.1)."""
    path = tmp_path / "run.yaml"
    path.write_text("judge:\n  calibration: off\nclean:\n  rule:\n    fast_path: false\n")
    cfg = load_run_config(path, ["evaluate.judge_mode=auto"])
    assert cfg.judge.calibration == "off" and cfg.clean.rule.fast_path is False
    assert load_run_config(None, ["judge.calibration=off"]).judge.calibration == "off"
