from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def revise(prompts: Input[Dataset], config: str, run_root: str, kfp_run_id: str, revisions: Output[Dataset],
           metrics: Output[Metrics]):
    """Stage 1: answer, critique and revise each prompt."""
    from cai_core.runtime.engine import execute

    stage = execute("revise", config, {"prompts": prompts.path}, revisions.path, run_root, metrics,
                    kfp_run_id=kfp_run_id)
    revisions.metadata["rows"] = stage["metrics"].get("rows", 0)
