from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def prepare(step: str, config: str, run_root: str, kfp_run_id: str, prompts: Output[Dataset], metrics: Output[Metrics]):
    """Read and check a prompts file; stable ids per row."""
    from cai_core.runtime.engine import execute

    stage = execute(step, config, {}, prompts.path, run_root, metrics, kfp_run_id=kfp_run_id)
    prompts.metadata["rows"] = stage["metrics"].get("rows_out", 0)
