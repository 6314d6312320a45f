from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Metrics, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def compare(verdicts: List[str], roster: str, config: str, run_root: str, kfp_run_id: str,
            table: Output[Dataset], html: Output[HTML], metrics: Output[Metrics]):
    """Ablation: mean and 95% CI per cleaning variant over the finished member runs."""
    import shutil

    from cai_core.runtime.engine import execute

    execute("compare", config, {}, table.path, run_root, metrics, params={"roster": roster, "verdicts": verdicts},
            kfp_run_id=kfp_run_id)
    shutil.copyfile(f"{table.path}/ablation.html", html.path)
