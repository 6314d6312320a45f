"""In-process generation with transformers (the local/CPU backend).

`TransformersChatModel` implements `ChatModel` on any causal LM that
`AutoModelForCausalLM.from_pretrained` loads ("tiny" for the embedded model,
a local directory, or a hub id). The model loads lazily on first use.

Seeding and batching — the rule this backend follows so that a request's text
depends only on (model, prompt, Sampling), not on which other requests share
the call:

* every request is batched (left-padded, ``batch_size`` at a time, prompts of
  similar length together), greedy and sampled, whatever their temperature
  and top_p: each row is decoded with its own settings;
* a sampled request draws its tokens from its own random generator
  (``torch.Generator`` seeded with the request's ``seed``), one draw per
  generated token, so its random stream never depends on the other rows of
  the batch, and the caller's global RNG is untouched. A request without a
  seed (explicitly non-reproducible) gets a generator seeded from torch's
  global RNG;
* what can still differ between a lone request and the same request in a
  padded batch is the float rounding of the logits (matrix kernels block
  differently by batch size): a draw that falls within that rounding of a
  boundary between two tokens could pick the other one. The tests check on
  the tiny model and on SmolLM2 that lone and batched replies are equal.

The tokens are picked by a logits processor inside ``generate(do_sample=False)``:
it samples each row from its own distribution and masks every other token, so
the argmax generate then takes is the sampled token.

Within a group, rows that ask for fewer ``max_new_tokens`` than the group's
longest are generated to the longest and cut: generation is left to right, so
the first n tokens do not depend on how many come after. Generation stops at
the model's EOS token(s); only the new text is returned, decoded without
special tokens. Sampling uses exactly the given temperature and top_p (no
hidden top-k: transformers' default of 50 is switched off).
"""
from __future__ import annotations

import functools
import logging
from collections import defaultdict
from typing import Any, Sequence

from cai_core.errors import InputError
from cai_core.llm.base import Message, Sampling

log = logging.getLogger(__name__)


class TransformersChatModel:
    """A `ChatModel` running a transformers causal LM in this process."""

    remote = False  # stages send it batch_size rows per call

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

        from cai_core.models.registry import resolve_model

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

        The prompts of a batch of `batch_size` conversations (similar lengths together, left-padded) go
        through the model once, keeping only the last position's logits: that scores every choice's
        first token (a verdict "A", a grade "7" is one token). A longer choice ("10") continues from
        the prompts' key/value cache with its remaining tokens, and the cache is cut back after it.
        The cost is one prompt pass per batch whatever the number of choices, and memory does not grow
        with prompt length times vocabulary. The result for a conversation does not depend on the others.
        """
        if not choices:
            raise ValueError("choice_logprobs needs at least one choice")
        model, tokenizer = self._load()
        choice_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        for text, ids in zip(choices, choice_ids):
            if not ids:
                raise ValueError(f"choice {text!r} tokenizes to nothing")
        longest_choice = max(len(ids) for ids in choice_ids)
        prompts = [self._truncate(self._render(conv), longest_choice) for conv in conversations]
        results: list[list[float]] = [[] for _ in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            scores = self._choice_scores([prompts[i] for i in chunk], choice_ids)
            for i, row in zip(chunk, scores):
                results[i] = row
        return results

    def _choice_scores(self, prompts: list[list[int]], choice_ids: list[list[int]]) -> list[list[float]]:
        """One batch of `choice_logprobs`: one prompt pass, then a cached continuation per longer choice."""
        import torch

        model, tokenizer = self._load()
        device = model.device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attention[i, width - len(p):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            out = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                        position_ids=positions.to(device), use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            cache = out.past_key_values
            columns = []
            for ids in choice_ids:
                total = first[:, ids[0]].clone()
                if len(ids) > 1:
                    rest = torch.tensor(ids[:-1], dtype=torch.long).repeat(len(prompts), 1)
                    extended = torch.cat([attention, torch.ones_like(rest)], dim=1)
                    more = positions[:, -1:] + 1 + torch.arange(len(ids) - 1)
                    step = model(input_ids=rest.to(device), attention_mask=extended.to(device),
                                 position_ids=more.to(device), past_key_values=cache, use_cache=True)
                    logprobs = torch.log_softmax(step.logits.float(), dim=-1)
                    targets = torch.tensor(ids[1:], device=device)
                    total += logprobs[:, torch.arange(len(ids) - 1), targets].sum(-1)
                    cache.crop(-(len(ids) - 1))  # back to the prompts alone
                columns.append(total.tolist())
        return [[float(col[r]) for col in columns] for r in range(len(prompts))]

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
        for s in sampling:
            if s.temperature < 0 or not 0 < s.top_p <= 1 or s.max_new_tokens < 0:
                raise ValueError(f"invalid sampling {s}: temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 0")
        out = [""] * len(prompts)
        todo = sorted((i for i, s in enumerate(sampling) if s.max_new_tokens > 0), key=lambda i: len(prompts[i]))
        for start in range(0, len(todo), self.batch_size):  # similar lengths together pad less
            chunk = todo[start:start + self.batch_size]
            generators = [_generator(sampling[i].seed) if sampling[i].temperature > 0 else None for i in chunk]
            texts = self._generate_batch([prompts[i] for i in chunk], [sampling[i] for i in chunk], generators)
            for i, text in zip(chunk, texts):
                out[i] = text
        return out

    def _generate_batch(self, prompts: list[list[int]], sampling: list[Sampling], generators: list) -> list[str]:
        """One left-padded generate() call; each row is picked with its own Sampling and generator."""
        import torch
        from transformers import LogitsProcessorList

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
        picker = _row_picker_class()(sampling, generators)
        with torch.no_grad():
            generated = model.generate(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device),
                                       max_new_tokens=max_new, pad_token_id=pad_id, do_sample=False,
                                       logits_processor=LogitsProcessorList([picker]))
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


def _generator(seed: int | None):
    import torch

    if seed is None:  # not reproducible on purpose: a seed from the global RNG
        seed = int(torch.randint(0, 2**62, (1,)).item())
    return torch.Generator().manual_seed(int(seed))


def pick_tokens(scores, sampling: Sequence[Sampling], generators: Sequence) -> list[int]:
    """The next token of each row: argmax where greedy, else a draw from softmax(logits / T) cut to top_p.

    Vectorised over the rows (every operation is row-wise, so a row's token never depends on the others);
    each sampled row takes exactly one uniform draw from its own generator.
    """
    import torch

    picked = torch.argmax(scores, dim=-1)
    rows = [i for i, (s, g) in enumerate(zip(sampling, generators)) if s.temperature > 0 and g is not None]
    if rows:
        index = torch.tensor(rows, device=scores.device)
        temps = torch.tensor([sampling[i].temperature for i in rows], dtype=torch.float32, device=scores.device)
        probs = torch.softmax(scores[index].float() / temps[:, None], dim=-1)
        top_ps = [sampling[i].top_p for i in rows]
        if min(top_ps) < 1:
            probs, order = torch.sort(probs, dim=-1, descending=True)
            limit = torch.tensor(top_ps, dtype=torch.float32, device=scores.device)[:, None]
            probs = probs * ((torch.cumsum(probs, dim=-1) - probs) < limit)  # the top token always stays
        else:
            order = None
        cumulative = torch.cumsum(probs, dim=-1)
        draws = torch.stack([torch.rand((), generator=generators[i]) for i in rows]).to(cumulative.device)
        position = torch.searchsorted(cumulative, (draws * cumulative[:, -1])[:, None], right=True)
        position = position.clamp(max=cumulative.shape[-1] - 1)
        tokens = position if order is None else order.gather(1, position)
        picked[index] = tokens[:, 0]
    return picked.tolist()


@functools.lru_cache(maxsize=None)
def _row_picker_class():
    from transformers import LogitsProcessor

    class RowPicker(LogitsProcessor):
        """Picks each row's token with its own Sampling and generator; generate's argmax then takes it."""

        def __init__(self, sampling: list[Sampling], generators: list):
            self.sampling, self.generators = sampling, generators

        def __call__(self, input_ids, scores):
            import torch

            picked = torch.full_like(scores, float("-inf"))
            tokens = torch.tensor(pick_tokens(scores, self.sampling, self.generators), device=scores.device)
            picked[torch.arange(len(tokens), device=scores.device), tokens] = 0.0
            return picked

    return RowPicker


def _check_lengths(items: Sequence, sampling: Sequence[Sampling]) -> None:
    if len(items) != len(sampling):
        raise ValueError(f"{len(items)} requests but {len(sampling)} sampling settings")


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

