"""model.json: a training step's artifact that refers to weights its job wrote (cai_core/runtime/model_ref.py)."""
from __future__ import annotations

import json
import re

import pytest

from cai_core.errors import InputError
from cai_core.runtime import artifacts, model_ref


def test_a_reference_records_where_the_weights_are_and_how_big_they_are(tmp_path):
    files = {"config.json": {"size": 20, "sha256": "a"}, "model.safetensors": {"size": 1000, "sha256": "b"}}
    final = "s3://b/run/_train/sft/fp/final"
    path = model_ref.write(tmp_path, f"{final}/model/", files, f"{final}/_MANIFEST.json")
    assert path == tmp_path / artifacts.MODEL_REF
    assert json.loads(path.read_text()) == {"uri": "s3://b/run/_train/sft/fp/final/model", "files": 2, "bytes": 1020,
                                            "manifest": "s3://b/run/_train/sft/fp/final/_MANIFEST.json"}
    assert model_ref.location(tmp_path) == "s3://b/run/_train/sft/fp/final/model"
    assert model_ref.manifest_of(model_ref.read(tmp_path)) == "s3://b/run/_train/sft/fp/final/_MANIFEST.json"
    assert model_ref.manifest_of({"uri": "s3://b/x/final/model"}) == "s3://b/x/final/_MANIFEST.json"


def test_a_model_directory_in_the_artifact_wins(tmp_path):
    (tmp_path / artifacts.MODEL_DIR).mkdir()
    model_ref.write(tmp_path, "s3://b/elsewhere/model", {}, "")
    assert model_ref.location(tmp_path) == str(tmp_path / artifacts.MODEL_DIR)  # trained in process: local weights


@pytest.mark.parametrize("content, needle", [
    (None, "holds no trained model (neither model/ nor model.json)"),
    ("{not json", "not a model reference"),
    ('{"files": 1}', "not a model reference (no 'uri')"),
    ('{"uri": ""}', "not a model reference (no 'uri')"),
    ('["s3://b/m"]', "not a model reference (no 'uri')"),
])
def test_an_artifact_without_a_usable_model_is_an_error_naming_it(tmp_path, content, needle):
    if content is not None:
        (tmp_path / artifacts.MODEL_REF).write_text(content)
    with pytest.raises(InputError, match=re.escape(needle)) as err:
        model_ref.location(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert model_ref.read(tmp_path / "nothing-here") is None
