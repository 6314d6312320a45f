from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from cai_components.images import CORE_IMAGE


@dsl.component(base_image=CORE_IMAGE, install_kfp_package=False)
def report(clean_revisions: Input[Dataset], sft: Input[Model], clean_pairs: Input[Dataset], judge: Input[Dataset],
           dpo: Input[Model], gate: Input[Dataset], config: str, run_root: str, kfp_run_id: str,
           bundle: Output[Dataset], html: Output[HTML], markdown: Output[Markdown], metrics: Output[Metrics],
           evaluate: Input[Dataset] = None, rounds: int = 1):
    """Stage 10: the run's report (HTML, Markdown, metrics.json), also shown in the Kubeflow UI.
    Without `evaluate` (the gate failed the DPO model) the report says why nothing was promoted. `rounds`: the
    run's preference rounds (dpo.iterations), each of which the report shows."""
    import shutil

    from cai_core.runtime.engine import execute

    inputs = {"clean_revisions": clean_revisions.path, "sft": sft.path, "clean_pairs": clean_pairs.path,
              "judge": judge.path, "dpo": dpo.path, "gate": gate.path}
    if evaluate is not None:
        inputs["evaluate"] = evaluate.path
    execute("report", config, inputs, bundle.path, run_root, metrics, params={"rounds": rounds}, kfp_run_id=kfp_run_id)
    shutil.copyfile(f"{bundle.path}/report.html", html.path)
    shutil.copyfile(f"{bundle.path}/report.md", markdown.path)
