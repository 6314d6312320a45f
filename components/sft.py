from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from cai_components.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def sft(data: Input[Dataset], config: str, run_root: str, kfp_run_id: str, model: Output[Model],
        metrics: Output[Metrics]):
    """Stage 3: supervised fine-tuning on (prompt, cleaned final revision)."""
    from cai_core.runtime.engine import execute

    stage = execute("sft", config, {"data": data.path}, model.path, run_root, metrics, kfp_run_id=kfp_run_id)
    model.metadata["steps"] = stage["metrics"].get("steps", 0)
    model.metadata["weights"] = stage["details"].get("model_uri", "model/ in this artifact")  # else: model.json
