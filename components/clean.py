from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def clean(step: str, rows: Input[Dataset], config: str, run_root: str, kfp_run_id: str, cleaned: Output[Dataset],
          metrics: Output[Metrics]):
    """Stage 2: clean self-generated text (revisions before SFT, pairs before judging)."""
    from cai_core.runtime.engine import execute

    stage = execute(step, config, {"rows": rows.path}, cleaned.path, run_root, metrics, kfp_run_id=kfp_run_id)
    cleaned.metadata["rows"] = stage["metrics"].get("rows", 0)
