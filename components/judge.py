from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def judge(pairs: Input[Dataset], config: str, run_root: str, preferences: Output[Dataset], metrics: Output[Metrics]):
    """Stage 6: AI feedback, asked in both orders; undecided pairs dropped and counted."""
    from cai_core.runtime import execute

    stage = execute("judge", config, {"pairs": pairs.path}, preferences.path, run_root, metrics)
    preferences.metadata["rows"] = stage["metrics"].get("train", 0)
