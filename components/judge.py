from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def judge(step: str, pairs: Input[Dataset], config: str, run_root: str, kfp_run_id: str,
          preferences: Output[Dataset],
          metrics: Output[Metrics],
          constitution: Optional[Input[Dataset]] = None):
    """Stage 6: AI feedback, asked in both orders; undecided pairs dropped and counted."""
    from cai_core.runtime.engine import execute

    inputs = {"pairs": pairs.path}
    if constitution is not None:  # judge.constitution: discover -> the discover step's output
        inputs["constitution"] = constitution.path
    stage = execute(step, config, inputs, preferences.path, run_root, metrics, kfp_run_id=kfp_run_id)
    preferences.metadata["rows"] = stage["metrics"].get("train", 0)
