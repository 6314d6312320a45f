from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from cai_components.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def dpo(step: str, preferences: Input[Dataset], sft_model: Input[Model], config: str, run_root: str, kfp_run_id: str,
        model: Output[Model], metrics: Output[Metrics]):
    """Stage 7: DPO from and against the frozen SFT model (a later preference round: the last DPO model)."""
    from cai_core.runtime.engine import execute

    stage = execute(step, config, {"preferences": preferences.path, "model": sft_model.path}, model.path, run_root,
                    metrics, kfp_run_id=kfp_run_id)
    model.metadata["steps"] = stage["metrics"].get("steps", 0)
    model.metadata["weights"] = stage["details"].get("model_uri", "model/ in this artifact")  # else: model.json
