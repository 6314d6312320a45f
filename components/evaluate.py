from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def evaluate(prompts: Input[Dataset], sft_model: Input[Model], dpo_model: Input[Model],
             config: str, run_root: str, kfp_run_id: str, results: Output[Dataset], metrics: Output[Metrics],
             models: str = "base,sft,dpo"):
    """Stage 9: the models answer held-out prompts, MT-Bench and red-team/benign prompts; a judge grades
    (MT-Bench turn-1/turn-2/average, attack success rate, over-refusal); collapse metrics per model."""
    from cai_core.runtime.engine import execute

    inputs = {"prompts": prompts.path, "sft": sft_model.path, "dpo": dpo_model.path}
    execute("evaluate", config, inputs, results.path, run_root, metrics,
            params={"models": models}, kfp_run_id=kfp_run_id)
