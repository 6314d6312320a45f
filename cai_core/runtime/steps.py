"""The pipeline's steps: the one list of step names, and what each step is.

A step is a stage applied at one point of the DAG (`clean_revisions` and
`clean_pairs` both run the clean stage). Everything that names steps derives
the names from `STEPS`: the engine and its adapters, the cluster settings
(cai_core/config/cluster.py), the KFP pipeline and its platform layer
(pipelines/) and the report.

A leaf apart from `artifacts` (the cluster config reads it while the config
classes are being defined), so a step's config sections are names and its
narrowing is data: `Narrowing(flag, sections)` reads a flag of the step's own
config section.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping

#: generation: the pod generates text with a policy model (vLLM on GPUs on the cluster); training: the pod
#: launches the training (a small CPU launcher pod of a PyTorchJob on the cluster); cpu: neither.
Kind = Literal["cpu", "generation", "training"]


@dataclass(frozen=True)
class Narrowing:
    """Sections a step reads only while a flag of its own config section is true.

    A config that leaves the flag off does not put those sections in the step's payload, so they change
    neither its inputs, its fingerprint nor its KFP cache key.
    """

    #: A boolean attribute of the step's own section (e.g. `CleanConfig.calls_teacher`), or of `of`.
    flag: str
    #: The sections read only while it is true.
    sections: tuple[str, ...]
    #: The section holding the flag; empty = the step's own.
    of: str = ""


@dataclass(frozen=True)
class Step:
    name: str
    #: The module under cai_core/stages that the step runs.
    stage: str
    #: RunConfig sections the step reads; the first is the stage's own.
    sections: tuple[str, ...]
    #: Input artifacts the step's component always passes (name -> path).
    inputs: tuple[str, ...] = ()
    #: Input artifacts passed only in some DAGs (the discover step's constitution, the evaluation after the gate).
    optional_inputs: tuple[str, ...] = ()
    kind: Kind = "cpu"
    narrowing: Narrowing | None = None

    @property
    def section(self) -> str:
        """The stage's own config section."""
        return self.sections[0]

    @property
    def needs_teacher(self) -> bool:
        """The step may talk to the run's teacher (an endpoint, or the policy model in process)."""
        return "teacher" in self.sections

    @property
    def reads_datasets(self) -> bool:
        """The step reads the user's data sets (prepare, discover), which may be hf: sources (HF_TOKEN)."""
        return self.stage in ("prepare", "discover")

    @property
    def loads_model(self) -> bool:
        """The step's pod loads model weights (the policy, or a model trained from it)."""
        return self.kind != "cpu"

    def used(self, cfg: Any) -> tuple[str, ...]:
        """The sections `cfg` (a RunConfig) really uses: `sections`, less those its narrowing turns off."""
        narrowing = self.narrowing
        if narrowing is None or getattr(getattr(cfg, narrowing.of or self.section), narrowing.flag):
            return self.sections
        return tuple(s for s in self.sections if s not in narrowing.sections)


#: A generation step reads the `vllm` section only while model.backend is vllm, so vLLM settings change no
#: in-process (transformers) run's fingerprints, and no training step's ever.
_VLLM = Narrowing(flag="serves_vllm", sections=("vllm",), of="model")

_CLEAN = dict(stage="clean", sections=("clean", "teacher", "model"), inputs=("rows",),
              narrowing=Narrowing(flag="calls_teacher", sections=("teacher", "model")))

#: Every step of the DAG, in order.
STEPS: Mapping[str, Step] = MappingProxyType({step.name: step for step in (
    Step("prepare_prompts", "prepare", ("prompts",)),
    # the overlap check reads the training prompts' section (eval_prompts.overlap: off leaves it out)
    Step("prepare_eval", "prepare", ("eval_prompts", "prompts"),
         narrowing=Narrowing(flag="checks_overlap", sections=("prompts",))),
    Step("revise", "revise", ("revise", "model", "vllm"), inputs=("prompts",), kind="generation", narrowing=_VLLM),
    Step("clean_revisions", **_CLEAN),
    Step("sft", "sft", ("sft", "model", "train"), inputs=("data",), kind="training"),
    Step("pairs", "pairs", ("pairs", "model", "vllm"), inputs=("prompts", "model"), kind="generation",
         narrowing=_VLLM),
    Step("clean_pairs", **_CLEAN),
    Step("discover", "discover", ("discover", "teacher", "model")),
    Step("judge", "judge", ("judge", "teacher", "model"), inputs=("pairs",), optional_inputs=("constitution",)),
    Step("dpo", "dpo", ("dpo", "train"), inputs=("preferences", "model"), kind="training"),
    # the collapse gate's models answer its probe set
    Step("gate", "gate", ("gate", "model", "vllm"), inputs=("prompts", "sft", "dpo"), kind="generation",
         narrowing=_VLLM),
    Step("evaluate", "evaluate", ("evaluate", "model", "teacher", "vllm"), inputs=("prompts", "sft", "dpo"),
         kind="generation", narrowing=_VLLM),
    Step("report", "report", ("report",), inputs=("clean_revisions", "sft", "clean_pairs", "judge", "dpo", "gate"),
         optional_inputs=("evaluate",)),
    Step("compare", "compare", ("ablation",)),
)})


#: The steps one preference round runs, in DAG order. `dpo.iterations: N` repeats them N times; round 1 keeps the
#: plain names and round k > 1 appends `_r<k>` (`pairs_r2`, ..., `gate_r2`), which names its published folder, its
#: metrics.json entry and its fingerprint, so each round is reused on its own.
ROUND_STEPS = ("pairs", "clean_pairs", "judge", "dpo", "gate")
ROUND_MARK = "_r"

#: Config fields that shape the DAG (read when the pipeline is built) and reach no step's payload, so changing
#: them changes no step's fingerprint: `dpo.iterations: 2` reuses every step of round 1.
DAG_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType({"dpo": ("iterations",)})


def round_name(step: str, round_no: int) -> str:
    """The name of `step` in preference round `round_no` (1-based): `dpo`, `dpo_r2`, ..."""
    if step not in ROUND_STEPS:
        raise KeyError(f"{step} is not a step of a preference round ({', '.join(ROUND_STEPS)})")
    return step if round_no == 1 else f"{step}{ROUND_MARK}{round_no}"


def split_round(name: str) -> tuple[str, int]:
    """(`dpo`, 2) for `dpo_r2`; (name, 1) for a plain step name. Raises KeyError for a name that is neither."""
    if name in STEPS:
        return name, 1
    base, mark, number = name.rpartition(ROUND_MARK)
    if mark and base in ROUND_STEPS and number.isdigit() and int(number) >= 2 and str(int(number)) == number:
        return base, int(number)
    raise KeyError(name)


def step_of(name: str) -> Step:
    """The Step a DAG step name runs (a round's `judge_r2` runs `judge`); KeyError for an unknown name."""
    return STEPS[split_round(name)[0]]


def round_names(round_no: int) -> tuple[str, ...]:
    """The step names of preference round `round_no`."""
    return tuple(round_name(step, round_no) for step in ROUND_STEPS)


def named(keep: Callable[[Step], bool]) -> tuple[str, ...]:
    """The names of the steps `keep` accepts, in DAG order."""
    return tuple(name for name, step in STEPS.items() if keep(step))


#: Every step name, in DAG order (the names `platform(task, step)` receives).
STEP_NAMES = tuple(STEPS)
#: Steps whose pod generates text with a policy model (vLLM on GPUs on the cluster).
GENERATION_STEPS = named(lambda step: step.kind == "generation")
#: Steps whose pod launches the training (a PyTorchJob from a small CPU launcher pod on the cluster).
TRAINING_STEPS = named(lambda step: step.kind == "training")
