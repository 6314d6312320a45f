"""In-process generation with transformers (the local/CPU backend).

`TransformersChatModel` implements `ChatModel` on any causal LM that
`AutoModelForCausalLM.from_pretrained` loads ("tiny" for the embedded model,
a local directory, or a hub id). The model loads lazily on first use.

Seeding and batching — the rule this backend follows so that a request's text
depends only on (model, prompt, Sampling), never on which other requests
share the call:

* greedy requests (``temperature == 0``) have no randomness; they are batched
  (left-padded, ``batch_size`` at a time, prompts of similar length together).
  A padded batch can differ from a lone request in the last float bits, so an
  exact tie between the two most likely tokens could in principle resolve
  differently; the tests check that batched and lone greedy replies are equal;
* sampled requests with a ``seed`` are generated one at a time, each under its
  own RNG state (``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``,
  so the caller's global RNG is untouched). One request at a time is the only
  way to make the random draws — and the float arithmetic they depend on —
  identical whatever the batch composition; it costs throughput, which on the
  CPU-sized models this backend is for is a small price (the cluster
  generates with vLLM);
* sampled requests without a seed (explicitly non-reproducible) are batched,
  grouped by their (temperature, top_p).

Within a group, rows that ask for fewer ``max_new_tokens`` than the group's
longest are generated to the longest and cut: generation is left to right, so
the first n tokens do not depend on how many come after. Generation stops at
the model's EOS token(s); only the new text is returned, decoded without
special tokens. Sampling uses exactly the given temperature and top_p (no
hidden top-k: transformers' default of 50 is switched off).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Sequence

from cai_core.errors import InputError
from cai_core.llm.base import Message, Sampling

log = logging.getLogger(__name__)


class TransformersChatModel:
    """A `ChatModel` running a transformers causal LM in this process."""

    def __init__(self, model_path: str, device: str = "cpu", dtype: Any = None, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model_path = str(model_path)
        self.name = self.model_path
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None
        self._stop_ids: set[int] = set()
        self.stats: dict[str, int] = defaultdict(int)  # prompts_truncated, requests, generated_tokens

    # ------------------------------------------------------------------ loading

    def _load(self):
        if self._model is not None:
            return self._model, self._tokenizer
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from cai_core.models.tiny import resolve_model

        path = resolve_model(self.model_path)
        dtype = _torch_dtype(self.dtype, self.device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except OSError as exc:
            raise InputError(f"cannot load model '{self.model_path}': {exc}") from None
        model.to(self.device)
        model.eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._stop_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self._model, self._tokenizer = model, tokenizer
        return model, tokenizer

    @property
    def tokenizer(self):
        return self._load()[1]

    @property
    def model(self):
        return self._load()[0]

    def close(self) -> None:
        """Drop the model (frees memory); the next call loads it again."""
        self._model = self._tokenizer = None

    # ------------------------------------------------------------------ ChatModel

    def chat(self, conversations: Sequence[Sequence[Message]], sampling: Sequence[Sampling]) -> list[str]:
        """One assistant reply per conversation, rendered with the model's chat template."""
        _check_lengths(conversations, sampling)
        prompts = [self._render(conv) for conv in conversations]
        return self._generate(prompts, list(sampling))

    def complete(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[str]:
        """Raw continuation of each prompt (tokenised with the tokenizer's own special tokens, e.g. BOS)."""
        _check_lengths(prompts, sampling)
        _, tokenizer = self._load()
        ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
        return self._generate(ids, list(sampling))

    def choice_logprobs(self, conversations: Sequence[Sequence[Message]], choices: Sequence[str]) -> list[list[float]]:
        """log P(choice | conversation + generation prompt), summed over the choice's tokens.

        Every (conversation, choice) sequence of a batch of `batch_size` conversations goes through
        one forward pass (right-padded); the result for a conversation does not depend on the others.
        """
        import torch

        if not choices:
            raise ValueError("choice_logprobs needs at least one choice")
        model, tokenizer = self._load()
        choice_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        for text, ids in zip(choices, choice_ids):
            if not ids:
                raise ValueError(f"choice {text!r} tokenizes to nothing")
        longest_choice = max(len(ids) for ids in choice_ids)
        pad_id = tokenizer.pad_token_id
        results: list[list[float]] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start:start + self.batch_size]
            prompts = [self._truncate(self._render(conv), longest_choice) for conv in chunk]
            seqs, spans = [], []
            for prompt in prompts:
                for ids in choice_ids:
                    seqs.append(prompt + ids)
                    spans.append((len(prompt), len(ids)))
            width = max(len(s) for s in seqs)
            input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, s in enumerate(seqs):
                input_ids[i, :len(s)] = torch.tensor(s)
                attention[i, :len(s)] = 1
            with torch.no_grad():
                logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            flat = []
            for i, (p_len, c_len) in enumerate(spans):
                positions = torch.arange(p_len - 1, p_len + c_len - 1, device=logprobs.device)
                targets = input_ids[i, p_len:p_len + c_len].to(logprobs.device)
                flat.append(float(logprobs[i, positions, targets].sum()))
            for j in range(len(chunk)):
                results.append(flat[j * len(choices):(j + 1) * len(choices)])
        return results

    # ------------------------------------------------------------------ internals

    def _render(self, conversation: Sequence[Message]) -> list[int]:
        _, tokenizer = self._load()
        if not getattr(tokenizer, "chat_template", None):
            raise InputError(f"model '{self.model_path}' has no chat template; use complete() for base models")
        text = tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)
        # The template writes its own special tokens (BOS): do not add them again.
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def _truncate(self, ids: list[int], room: int) -> list[int]:
        """Keep the end of a prompt so that prompt + `room` new tokens fit the model's positions."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and len(ids) + room > limit:
            self.stats["prompts_truncated"] += 1
            keep = max(1, limit - room)
            return ids[-keep:]
        return ids

    def _generate(self, prompts: list[list[int]], sampling: list[Sampling]) -> list[str]:
        import torch

        for s in sampling:
            if s.temperature < 0 or not 0 < s.top_p <= 1 or s.max_new_tokens < 0:
                raise ValueError(f"invalid sampling {s}: temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 0")
        out: list[str | None] = [None] * len(prompts)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, s in enumerate(sampling):
            if s.max_new_tokens == 0:
                out[i] = ""
            elif s.temperature == 0:
                groups[("greedy",)].append(i)
            elif s.seed is not None:
                groups[("seeded", i)].append(i)
            else:
                groups[("sampled", s.temperature, s.top_p)].append(i)
        for key, members in groups.items():
            if key[0] == "seeded":
                i = members[0]
                with torch.random.fork_rng(devices=_rng_devices(self.device)):
                    torch.manual_seed(sampling[i].seed)
                    out[i] = self._generate_batch([prompts[i]], [sampling[i]])[0]
                continue
            members = sorted(members, key=lambda i: len(prompts[i]))  # similar lengths pad less
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                texts = self._generate_batch([prompts[i] for i in chunk], [sampling[i] for i in chunk])
                for i, text in zip(chunk, texts):
                    out[i] = text
        return [t if t is not None else "" for t in out]

    def _generate_batch(self, prompts: list[list[int]], sampling: list[Sampling]) -> list[str]:
        """One left-padded generate() call; all rows share temperature/top_p (or are greedy)."""
        import torch

        model, tokenizer = self._load()
        max_new = max(s.max_new_tokens for s in sampling)
        prompts = [self._truncate(p, max_new) for p in prompts]
        width = max(len(p) for p in prompts)
        pad_id = tokenizer.pad_token_id
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attention[i, width - len(p):] = 1
        kwargs: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": pad_id}
        first = sampling[0]
        if first.temperature == 0:
            kwargs["do_sample"] = False
        else:
            kwargs.update(do_sample=True, temperature=first.temperature, top_p=first.top_p, top_k=0)
        with torch.no_grad():
            generated = model.generate(input_ids=input_ids.to(model.device),
                                       attention_mask=attention.to(model.device), **kwargs)
        texts = []
        for row, s in zip(generated[:, width:].tolist(), sampling):
            row = row[:s.max_new_tokens]
            for j, tok in enumerate(row):
                if tok in self._stop_ids:
                    row = row[:j]
                    break
            self.stats["generated_tokens"] += len(row)
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
        self.stats["requests"] += len(prompts)
        return texts


def _check_lengths(items: Sequence, sampling: Sequence[Sampling]) -> None:
    if len(items) != len(sampling):
        raise ValueError(f"{len(items)} requests but {len(sampling)} sampling settings")


def _rng_devices(device: str) -> list:
    return [] if not str(device).startswith("cuda") else [_cuda_index(device)]


def _cuda_index(device: str) -> int:
    import torch

    d = torch.device(device)
    return d.index if d.index is not None else torch.cuda.current_device()


def _torch_dtype(dtype: Any, device: str):
    import torch

    if dtype is None or dtype == "auto":
        if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if str(dtype) not in names:
        raise ValueError(f"unknown dtype {dtype!r} (expected one of {', '.join(names)})")
    return names[str(dtype)]

