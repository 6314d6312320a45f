"""The embedded tiny model: offline build, cache, determinism, chat template, resolve_model."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cai_core.errors import InputError
from cai_core.models import registry, tiny


def session_cache(tmp_path_factory) -> Path:
    """One cache directory for the whole test session (the same path from every test module)."""
    return tmp_path_factory.getbasetemp() / "cai-cache"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    start = time.perf_counter()
    path = tiny.ensure_tiny_model(session_cache(tmp_path_factory))
    print(f"tiny model ready in {time.perf_counter() - start:.1f} s: {path}")
    return path


def test_builds_into_fingerprinted_cache_dir(tiny_dir, tmp_path_factory):
    assert tiny_dir.parent == session_cache(tmp_path_factory) / "models"
    source, dialogues = tiny.load_corpus()
    assert tiny_dir.name == f"tiny-llama-{tiny.fingerprint(dialogues)}"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", tiny.BUILD_INFO):
        assert (tiny_dir / name).exists(), name
    info = json.loads((tiny_dir / tiny.BUILD_INFO).read_text())
    assert info["corpus_source"] == source
    assert info["warmup_loss_last"] < info["warmup_loss_first"]
    # no temporary build directories are left behind
    assert not [p for p in tiny_dir.parent.iterdir() if p.name.endswith(".tmp")]


def test_second_call_uses_the_cache(tiny_dir, tmp_path_factory):
    # The cache is used when nothing is built again: every file keeps its content and modification time.
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tiny_dir.rglob("*") if p.is_file()}
    again = tiny.ensure_tiny_model(session_cache(tmp_path_factory))
    assert again == tiny_dir
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tiny_dir.rglob("*") if p.is_file()} == before
    assert not [p for p in tiny_dir.parent.iterdir() if p.name.endswith(".tmp")]


def test_fingerprint_changes_with_corpus_and_settings():
    _, dialogues = tiny.load_corpus()
    base = tiny.fingerprint(dialogues)
    assert tiny.fingerprint(dialogues + [("one more", "row")]) != base
    assert tiny.fingerprint(dialogues, tiny.TinySettings(warmup_steps=10)) != base
    assert tiny.fingerprint(list(dialogues)) == base


def test_cache_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path))
    assert tiny.cache_root() == tmp_path
    monkeypatch.delenv("CAI_CACHE_DIR")
    assert tiny.cache_root() == Path.home() / ".cache" / "cai"


def test_build_is_deterministic(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    other = tiny.ensure_tiny_model(tmp_path / "second-cache")
    assert other != tiny_dir and other.name == tiny_dir.name
    a, b = load_file(tiny_dir / "model.safetensors"), load_file(other / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key
    assert (tiny_dir / "tokenizer.json").read_text() == (other / "tokenizer.json").read_text()


def test_loads_with_auto_classes_and_generates(tiny_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.config.model_type == "llama"
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.num_attention_heads == 4 and model.config.intermediate_size == 256
    assert model.config.max_position_embeddings == 512
    assert model.config.vocab_size == len(tok)
    assert 256 + len(tiny.SPECIAL_TOKENS) < len(tok) <= 2048
    assert tok.eos_token == tiny.EOS and tok.pad_token == tiny.PAD and tok.bos_token == tiny.BOS
    ids = tok.apply_chat_template([{"role": "user", "content": "How do I boil an egg?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    words = text.split()
    assert words, "the warmed-up model should say something"
    # English-ish: most words are made of letters, not byte noise
    assert sum(w.strip(".,!?'\"").isalpha() for w in words) >= len(words) // 2, text


def test_chat_template_renders_turns_and_generation_markers(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    assert "{% generation %}" in tok.chat_template and "{% endgeneration %}" in tok.chat_template
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello friend."}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == "<|bos|><|system|>Be brief.<|end|><|user|>Hi there<|end|><|assistant|>Hello friend.<|eos|>"
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|bos|><|system|>Be brief.<|end|><|user|>Hi there<|end|><|assistant|>"
    assert text.startswith(prompt)

    enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    masked = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(masked) == "Hello friend.<|eos|>"
    # the unmasked part is exactly the prompt with the generation prompt
    assert tok.decode([i for i, m in zip(ids, mask) if not m]) == prompt
    # prompt tokens are a prefix of prompt + answer tokens (TRL's SFT/DPO rely on it)
    prompt_ids = tok.apply_chat_template(messages[:2], add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids[:len(prompt_ids)] == prompt_ids


def test_resolve_model(tiny_dir, tmp_path, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("CAI_CACHE_DIR", str(session_cache(tmp_path_factory)))
    assert registry.resolve_model("tiny") == str(tiny_dir)
    assert registry.resolve_model("builtin:tiny") == str(tiny_dir)
    assert registry.resolve_model(str(tiny_dir)) == str(tiny_dir)
    assert registry.resolve_model("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"

    with pytest.raises(InputError, match="model directory not found"):
        registry.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="not found"):
        registry.resolve_model("./no/such/model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no config.json"):
        registry.resolve_model(str(empty))
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(InputError, match="got a file"):
        registry.resolve_model(str(a_file))
    with pytest.raises(InputError, match="empty model name"):
        registry.resolve_model("  ")


def test_corpus_fallback(monkeypatch, tmp_path):
    monkeypatch.setattr(tiny, "CORPUS_FILE", tmp_path / "absent.jsonl")
    monkeypatch.setattr(tiny, "PROMPTS_FILE", tmp_path / "prompts.jsonl")
    source, dialogues = tiny.load_corpus()
    assert source == "builtin" and dialogues == tiny.BUILTIN_DIALOGUES

    (tmp_path / "prompts.jsonl").write_text('{"id": "a", "prompt": "Name a colour.", "category": "x"}\n'
                                            "not json\n\n", encoding="utf-8")
    source, dialogues = tiny.load_corpus()
    assert source == "prompts.jsonl+builtin"
    assert dialogues[-1][0] == "Name a colour." and len(dialogues) == len(tiny.BUILTIN_DIALOGUES) + 1


def test_interrupted_build_leaves_nothing(monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(tiny, "build_tiny_model", boom)
    with pytest.raises(RuntimeError):
        tiny.ensure_tiny_model(tmp_path)
    models = tmp_path / "models"
    assert not [p for p in models.iterdir() if not p.name.endswith(".lock")]


def test_losing_the_rename_race_keeps_the_winner(monkeypatch, tmp_path):
    """Another process (without a working lock) moved its build into place first: ours is discarded."""
    def fake_build(out, dialogues, settings=tiny.DEFAULT_SETTINGS, *, source="", fp=""):
        (out / "config.json").write_text("{}")
        (out / tiny.BUILD_INFO).write_text("{}")
        final = out.parent / f"tiny-llama-{fp}"
        final.mkdir()
        (final / tiny.BUILD_INFO).write_text('{"winner": true}')
        return {}

    monkeypatch.setattr(tiny, "build_tiny_model", fake_build)
    path = tiny.ensure_tiny_model(tmp_path)
    assert json.loads((path / tiny.BUILD_INFO).read_text()) == {"winner": True}
    assert not list((tmp_path / "models").glob("*.tmp"))
