from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def discover(config: str, run_root: str, kfp_run_id: str, constitution: Output[Dataset], metrics: Output[Metrics]):
    """Constitution discovery: principles learned from the preference pairs in discover.source (before judge)."""
    from cai_core.runtime.engine import execute

    stage = execute("discover", config, {}, constitution.path, run_root, metrics, kfp_run_id=kfp_run_id)
    constitution.metadata["principles"] = stage["metrics"].get("principles", 0)
