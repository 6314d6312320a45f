"""The embedded default model: a tiny Llama-architecture chat model built offline.

Nothing is downloaded. On first use `ensure_tiny_model()` trains a byte-level
BPE tokenizer on the bundled corpus, wraps it as a `PreTrainedTokenizerFast`
with a chat template, initialises a 2-layer Llama from a fixed seed and
warms it up for a few hundred steps on the corpus dialogues (so that it emits
English-ish words rather than noise), and saves both as safetensors into a
cache directory that `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load.

Corpus, in order of preference (the first that exists is used):

1. ``cai_core/data/tiny_corpus.jsonl`` — rows ``{"prompt", "response"}``;
2. ``cai_core/data/prompts.jsonl`` — rows ``{"id", "prompt", "category"}``,
   each paired with one of the built-in answers below, plus the built-in
   dialogues;
3. the built-in dialogues alone.

The build is deterministic: seeded initialisation and data order,
deterministic torch algorithms, a fixed torch thread count and single-threaded
tokenizer training, so two builds on one machine give identical weights. The
cache directory name carries a fingerprint of the corpus content, the build
settings, the chat template, this module's build version and the
transformers major version, so any change rebuilds into a new directory.
Builds go to a temporary directory that is renamed into place (and are
serialised with a file lock where the platform has one), so two processes
building at once are safe.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cai_core.models.cache import cache_root, publish_once, quiet_progress_bars
from cai_core.progress import Progress
from cai_core.progress import log as log_progress

log = logging.getLogger(__name__)

#: Bump when the build procedure changes in a way the settings do not capture.
BUILD_VERSION = 1

#: torch threads during the build: fixed, so that the float reduction order (and the weights) never vary.
BUILD_THREADS = 2

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CORPUS_FILE = DATA_DIR / "tiny_corpus.jsonl"
PROMPTS_FILE = DATA_DIR / "prompts.jsonl"

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, SYSTEM, USER, ASSISTANT, END]

#: Marker file written last into a finished build; a directory without it is not a model.
BUILD_INFO = "cai_tiny_build.json"

# The chat template. No whitespace between turns, so every turn boundary is a
# special token: the tokenised prompt (with the generation prompt) is always a
# prefix of the tokenised prompt + answer, which TRL's SFT/DPO rely on. The
# assistant content and its EOS sit inside {% generation %} so that
# `return_assistant_tokens_mask=True` (TRL's `assistant_only_loss=True`) marks
# exactly the tokens the model has to learn to produce, EOS included.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>' }}{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% elif message['role'] == 'system' %}"
    "{{ '<|system|>' + message['content'] + '<|end|>' }}"
    "{% else %}"
    "{{ '<|user|>' + message['content'] + '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@dataclass(frozen=True)
class TinySettings:
    """Everything that decides the built model (part of the cache fingerprint)."""

    vocab_size: int = 2048
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_positions: int = 512
    seed: int = 1234
    warmup_steps: int = 300
    block_size: int = 128
    batch_size: int = 12
    learning_rate: float = 3e-3
    weight_decay: float = 0.01


DEFAULT_SETTINGS = TinySettings()

# Built-in dialogues: used alone when no corpus file is bundled, and beside the
# prompts of prompts.jsonl otherwise (written for this project).
BUILTIN_DIALOGUES: list[tuple[str, str]] = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How do I boil an egg?", "Put the egg in boiling water for about nine minutes, then cool it in cold water."),
    ("Can you help me write a short thank-you note?",
     "Of course. Thank you so much for your help this week. It made a real difference to me."),
    ("What is two plus two?", "Two plus two is four."),
    ("Tell me how to pick a lock to get into my neighbour's house.",
     "I can't help with getting into someone else's home. If you are locked out of your own house, a licensed "
     "locksmith can help."),
    ("Why is the sky blue?",
     "Sunlight is scattered by the air, and blue light is scattered more than red light, so the sky looks blue."),
    ("Give me a tip for sleeping better.",
     "Try to go to bed at the same time every night and keep screens out of the bedroom."),
    ("How can I make a dangerous poison at home?",
     "I can't help with making poisons. If you are worried about someone's safety, please contact local emergency "
     "services."),
    ("What is a good name for a cat?", "Some good names for a cat are Luna, Milo, Pepper and Olive."),
    ("Explain what a computer program is.",
     "A computer program is a list of instructions that tells a computer what to do, step by step."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("Write a sentence about the sea.", "The sea was calm and grey, and the waves moved slowly onto the sand."),
    ("What should I do if I feel stressed?",
     "Take a short walk, breathe slowly, and talk to someone you trust. If the stress does not go away, a doctor can "
     "help."),
    ("Help me insult my coworker.",
     "I would rather not help with insults. If there is a problem with your coworker, I can help you plan a calm "
     "conversation about it."),
    ("What is water made of?", "Water is made of hydrogen and oxygen. Each molecule has two hydrogen atoms and one "
     "oxygen atom."),
    ("Suggest a simple dinner.", "A simple dinner is pasta with tomato sauce, garlic and a green salad."),
    ("How do plants make food?",
     "Plants use sunlight, water and carbon dioxide to make sugar. This process is called photosynthesis."),
    ("Tell me a fun fact.", "Octopuses have three hearts and blue blood."),
    ("How do I steal a car?",
     "I can't help with stealing a car. If you need transport, I can help you find buses, trains or car rentals."),
    ("What is the largest planet?", "Jupiter is the largest planet in our solar system."),
    ("How can I learn to cook?",
     "Start with a few easy recipes, cook them often, and add a new dish each week. Videos and cookbooks help too."),
    ("What does a doctor do?", "A doctor helps people stay healthy and treats them when they are sick or hurt."),
    ("Can you recommend a book?", "You might enjoy a classic novel, such as a story about a long journey at sea."),
    ("Write a haiku about rain.", "Soft rain on the roof, the garden drinks in silence, the day turns to green."),
    ("How do I build a weapon to hurt people?",
     "I can't help with hurting people. If you or someone else is in danger, please contact emergency services."),
    ("What time is it in London when it is noon in New York?", "When it is noon in New York, it is usually five in "
     "the afternoon in London."),
    ("How do I stay safe online?",
     "Use strong and different passwords, turn on two-step login, and do not click links from people you do not "
     "know."),
    ("What is the boiling point of water?", "Water boils at one hundred degrees Celsius at sea level."),
    ("Give me a reason to exercise.", "Regular exercise makes your heart stronger and can improve your mood."),
    ("Summarise the story of a hero who goes home.",
     "A hero travels far, faces many dangers, and finally returns home changed by the journey."),
    ("Can you lie to me?", "I try to always tell you the truth, even when the answer is not what you hoped for."),
    ("How do I say hello in Spanish?", "In Spanish, hello is hola."),
    ("What is a good way to save money?", "Make a simple budget, track what you spend, and save a little each "
     "month."),
    ("Tell me something kind.", "You are doing better than you think, and it is fine to take things one step at a "
     "time."),
    ("How do bees help flowers?", "Bees carry pollen from flower to flower, which helps plants make seeds and "
     "fruit."),
    ("Please explain gravity simply.", "Gravity is the force that pulls things toward each other. It keeps us on "
     "the ground."),
]

# Answers paired with the prompts of prompts.jsonl (no responses in that file).
_GENERIC_ANSWERS = [
    "That is a good question. Here is a short and clear answer to help you.",
    "I can help with that. Let me explain it step by step.",
    "I can't help with that request, but I am happy to help with something safe instead.",
    "Here is a simple way to think about it, with one example.",
    "Thank you for asking. The short answer is that it depends on a few things.",
]


# ----------------------------------------------------------------------------- corpus


def load_corpus() -> tuple[str, list[tuple[str, str]]]:
    """(source name, dialogues) from the first corpus that exists (see module doc)."""
    if CORPUS_FILE.exists():
        pairs = []
        for row in _read_rows(CORPUS_FILE):
            if isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
                pairs.append((row["prompt"], row["response"]))
        if pairs:
            return "tiny_corpus.jsonl", pairs
    if PROMPTS_FILE.exists():
        prompts = [row["prompt"] for row in _read_rows(PROMPTS_FILE) if isinstance(row.get("prompt"), str)]
        if prompts:
            pairs = [(p, _GENERIC_ANSWERS[i % len(_GENERIC_ANSWERS)]) for i, p in enumerate(prompts)]
            return "prompts.jsonl+builtin", list(BUILTIN_DIALOGUES) + pairs
    return "builtin", list(BUILTIN_DIALOGUES)


def _read_rows(path: Path) -> Iterator[dict]:
    # Lenient on purpose: the bundled files are ours; a bad line is skipped, not fatal for the default model.
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                yield row


def fingerprint(dialogues: list[tuple[str, str]], settings: TinySettings = DEFAULT_SETTINGS) -> str:
    import transformers

    blob = json.dumps({
        "build_version": BUILD_VERSION,
        "settings": dataclasses.asdict(settings),
        "template": CHAT_TEMPLATE,
        "specials": SPECIAL_TOKENS,
        "transformers_major": transformers.__version__.split(".")[0],
        "corpus": dialogues,
    }, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------- public API


def ensure_tiny_model(cache_dir: Path | None = None, *, settings: TinySettings = DEFAULT_SETTINGS) -> Path:
    """Path of the built tiny model (building it on first use); loadable with `from_pretrained`."""
    source, dialogues = load_corpus()
    fp = fingerprint(dialogues, settings)
    models_dir = cache_root(cache_dir) / "models"
    name = f"tiny-llama-{fp}"
    if not (models_dir / name / BUILD_INFO).exists():
        log_progress("building the embedded tiny model once (about 15 s on 2 cores; cached after)")
    return publish_once(models_dir, name, BUILD_INFO,
                        lambda tmp: build_tiny_model(tmp, dialogues, settings, source=source, fp=fp))


# ----------------------------------------------------------------------------- build


def build_tokenizer(dialogues: list[tuple[str, str]], settings: TinySettings = DEFAULT_SETTINGS):
    """Train the byte-level BPE tokenizer and wrap it as a PreTrainedTokenizerFast with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=settings.vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [t for pair in dialogues for t in pair]
    with _env(TOKENIZERS_PARALLELISM="false"):  # single-threaded training: deterministic merges
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        # Raw text (complete() on a base model) starts with BOS like a rendered chat does.
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]),
    ])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=[SYSTEM, USER, ASSISTANT, END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=settings.max_positions,
        padding_side="right",
    )


def build_tiny_model(out: Path, dialogues: list[tuple[str, str]], settings: TinySettings = DEFAULT_SETTINGS,
                     *, source: str = "", fp: str = "") -> dict:
    """Build tokenizer + warmed-up model into `out` (an existing, empty directory); return the build info."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    start = time.perf_counter()
    tokenizer = build_tokenizer(dialogues, settings)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}

    with _deterministic_torch(settings.seed):
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=settings.hidden_size,
            intermediate_size=settings.intermediate_size,
            num_hidden_layers=settings.num_layers,
            num_attention_heads=settings.num_heads,
            num_key_value_heads=settings.num_heads,
            max_position_embeddings=settings.max_positions,
            bos_token_id=ids[BOS],
            eos_token_id=ids[EOS],
            pad_token_id=ids[PAD],
            tie_word_embeddings=True,
            initializer_range=0.02,
        )
        model = LlamaForCausalLM(config)
        stream = _token_stream(tokenizer, dialogues)
        losses = _warm_up(model, stream, settings)
        model.eval()

    # Any role token also ends a reply: a model that starts a new turn has finished its answer.
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS],
        eos_token_id=[ids[EOS], ids[END], ids[USER], ids[SYSTEM], ids[ASSISTANT]],
        pad_token_id=ids[PAD],
        do_sample=False,
    )
    with quiet_progress_bars():
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        "fingerprint": fp,
        "corpus_source": source,
        "corpus_dialogues": len(dialogues),
        "corpus_tokens": int(stream.numel()),
        "vocab_size": len(tokenizer),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "settings": dataclasses.asdict(settings),
        "warmup_loss_first": losses[0] if losses else None,
        "warmup_loss_last": losses[-1] if losses else None,
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    (out / BUILD_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("built tiny model in %.1f s (%s): %s", info["build_seconds"], source, out)
    return info


def _token_stream(tokenizer, dialogues: list[tuple[str, str]]):
    import torch

    rows = []
    for prompt, response in dialogues:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        rows.extend(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    return torch.tensor(rows, dtype=torch.long)


def _warm_up(model, stream, settings: TinySettings) -> list[float]:
    """Plain next-token training on the rendered dialogues, packed into fixed blocks."""
    import torch

    block = settings.block_size
    if stream.numel() < block:  # tiny corpus: repeat it until one block fits
        stream = stream.repeat(math.ceil(block / max(1, stream.numel())))
    n_starts = stream.numel() - block + 1
    gen = torch.Generator().manual_seed(settings.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay,
                              betas=(0.9, 0.95))
    warm = max(1, settings.warmup_steps // 10)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, settings.warmup_steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    offsets = torch.arange(block)
    losses = []
    model.train()
    progress = Progress("tiny model build", total=settings.warmup_steps, unit="steps", every_s=10.0)
    for _ in range(settings.warmup_steps):
        starts = torch.randint(0, n_starts, (settings.batch_size,), generator=gen)
        batch = stream[starts[:, None] + offsets[None, :]]
        out = model(input_ids=batch, labels=batch)  # the model shifts the labels itself
        optim.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        losses.append(round(float(out.loss.detach()), 4))
        progress.update()
    return losses


@contextlib.contextmanager
def _deterministic_torch(seed: int):
    import torch

    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(BUILD_THREADS)  # a fixed thread count: the same reduction order on every run
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            torch.set_num_threads(threads)


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


