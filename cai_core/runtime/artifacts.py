"""The file names inside a step's artifact: the runtime's record, the manifest and each step's main data file.

A leaf (standard library only), so the engine, the storage layer, the stages, the
report and the CLI commands name each file from here.
"""
from __future__ import annotations

#: The runtime's record of a finished step: fingerprint, metrics, details, timing (see `engine.execute`).
STAGE_FILE = "_stage.json"
#: Written last into a published directory (relative path -> size + sha256): the directory is complete.
MANIFEST_NAME = "_MANIFEST.json"

#: prepare_prompts, prepare_eval: the checked prompts with stable ids.
PROMPTS = "prompts.jsonl"
#: revise: each prompt's answer, critiques and revisions.
REVISIONS = "revisions.jsonl"
#: clean_revisions, clean_pairs: the rows with their texts cleaned.
CLEANED = "cleaned.jsonl"
#: clean_revisions: (prompt, cleaned final revision) rows for SFT.
SFT_ROWS = "sft.jsonl"
#: pairs: two sampled answers per prompt.
PAIRS = "pairs.jsonl"
#: discover: the learned constitution (a judge section).
CONSTITUTION = "constitution.yaml"
#: judge: the preference pairs DPO trains on.
PREFERENCES = "train.jsonl"
#: sft, dpo: the trained model's directory.
MODEL_DIR = "model"
#: sft, dpo trained by a job (train.launcher pytorchjob/trainjob): where the weights are, in place of MODEL_DIR
#: (cai_core.runtime.model_ref).
MODEL_REF = "model.json"
#: sft, dpo: one JSON row per logged training step.
TRAIN_LOG = "train_log.jsonl"
#: gate: the verdict, reasons and per-model probe metrics.
GATE = "gate.json"
#: evaluate: per-model results, gallery and judge statistics.
EVAL_SUMMARY = "summary.json"
#: report: the run's front page and its figures.
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
METRICS = "metrics.json"
PLOTS_DIR = "plots"
#: compare: the ablation table.
ABLATION_HTML = "ablation.html"
ABLATION_MD = "ablation.md"
ABLATION_JSON = "ablation.json"
