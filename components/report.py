from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def report(clean_revisions: Input[Dataset], sft: Input[Model], clean_pairs: Input[Dataset], judge: Input[Dataset],
           dpo: Input[Model], evaluate: Input[Dataset], config: str, run_root: str,
           bundle: Output[Dataset], html: Output[HTML], markdown: Output[Markdown], metrics: Output[Metrics]):
    """Stage 10: the run's report (HTML, Markdown, metrics.json), also shown in the Kubeflow UI."""
    import shutil

    from cai_core.runtime import execute

    inputs = {"clean_revisions": clean_revisions.path, "sft": sft.path, "clean_pairs": clean_pairs.path,
              "judge": judge.path, "dpo": dpo.path, "evaluate": evaluate.path}
    execute("report", config, inputs, bundle.path, run_root, metrics)
    shutil.copyfile(f"{bundle.path}/report.html", html.path)
    shutil.copyfile(f"{bundle.path}/report.md", markdown.path)
