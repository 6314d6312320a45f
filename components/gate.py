from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def gate(step: str, prompts: Input[Dataset], sft_model: Input[Model], dpo_model: Input[Model], config: str,
         run_root: str, kfp_run_id: str, result: Output[Dataset],
         metrics: Output[Metrics]) -> NamedTuple("Outputs", [("verdict", str)]):
    """Stage 8: collapse gate. The models answer fixed probes; rep-n / tail-loop over the thresholds
    fails (or flags) the DPO model before it is evaluated or promoted. Output `verdict`: pass, fail or flag."""
    from collections import namedtuple

    from cai_core.runtime.engine import execute
    from cai_core.stages.gate import verdict_of

    inputs = {"prompts": prompts.path, "sft": sft_model.path, "dpo": dpo_model.path}
    stage = execute(step, config, inputs, result.path, run_root, metrics, kfp_run_id=kfp_run_id)
    verdict = verdict_of(stage)
    result.metadata["verdict"] = verdict
    result.metadata["reasons"] = "; ".join(stage["details"].get("reasons", [])) or "none"
    return namedtuple("Outputs", ["verdict"])(verdict)
