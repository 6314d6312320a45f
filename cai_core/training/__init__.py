"""Training one stage (sft or dpo): in this process, under torchrun, or as a Kubeflow PyTorchJob.

    cai train sft --data runs/x/clean_revisions/sft.jsonl --out runs/x/_train/sft
    cai train dpo --data s3://b/run/judge/train.jsonl --model s3://b/run/sft/model \\
        --out s3://b/run/_train/dpo --launcher pytorchjob --config cluster.yaml
    cai train sft --launcher pytorchjob --data s3://... --out s3://... --dry-run   # the manifest, as YAML
    torchrun --nproc-per-node 2 -m cai_core.training sft --data ... --out ...    # one rank per process

``--config env:NAME`` reads the config (YAML or JSON) from the environment
variable NAME: that is how a PyTorchJob's pods get theirs.

``--launcher local`` (the default of ``train.launcher``) trains here. It is
also what every pod of a PyTorchJob runs under ``torchrun`` (RANK, WORLD_SIZE,
LOCAL_RANK, ... in the environment): with an ``s3://`` output

* the node's local rank 0 downloads the data, the model (when it is on S3) and
  the latest complete checkpoint into a node-local work directory
  (``CAI_TRAIN_WORKDIR``, the pod's /scratch), the other ranks wait at a barrier;
* after every save each node uploads its part of the checkpoint to
  ``<out>/checkpoints/checkpoint-<step>/node-<k>/`` (a directory with a
  manifest, written last); rank 0 then marks the checkpoint complete
  (``_COMPLETE.json``: step, nodes, world size) and deletes remote checkpoints
  beyond ``save_total_limit``; a restarted pod resumes from the latest complete
  one (node 0's part, which holds the model, trainer state and DeepSpeed's
  shared files, plus its own node's part);
* rank 0 uploads the result to ``<out>/final/`` (model/, train_log.jsonl,
  <stage>_config.json, result.json), manifest last.

``--launcher pytorchjob`` builds the job (cai_core/k8s/pytorchjob.py) from the
``train`` and ``cluster`` sections, creates it and watches it
(cai_core/k8s/launcher.py). `launch.run_training_step` is the same for a
pipeline step (the runtime's sft and dpo steps): it uploads the step's input
data next to the job's output (``<run>/_train/<step>/<fingerprint>``), points
the job at the model (for dpo: the weights the SFT job wrote, read in place),
and downloads ``<out>/final`` into the step's output directory, all but the
weights, which stay where the job wrote them: the step's artifact holds a
``model.json`` that refers to them (cai_core/runtime/model_ref.py).

Modules: `launch` (in process, the PyTorchJob, a pipeline step's training),
`distributed` (ranks and barriers), `sync` (data, checkpoints and results on
S3), `__main__` (``python -m cai_core.training``, what torchrun runs).
"""

STAGES = ("sft", "dpo")
