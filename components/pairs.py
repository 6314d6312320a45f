from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def pairs(step: str, prompts: Input[Dataset], model: Input[Model], config: str, run_root: str, kfp_run_id: str,
          pairs_out: Output[Dataset], metrics: Output[Metrics]):
    """Stage 4: two sampled answers per prompt from the SFT model (a later preference round: the last DPO model)."""
    from cai_core.runtime.engine import execute

    stage = execute(step, config, {"prompts": prompts.path, "model": model.path}, pairs_out.path, run_root, metrics,
                    kfp_run_id=kfp_run_id)
    pairs_out.metadata["rows"] = stage["metrics"].get("rows", 0)
