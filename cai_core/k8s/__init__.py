"""Training on Kubernetes: a Kubeflow PyTorchJob per training step.

* `config.LauncherConfig` — the run config's ``train`` section;
* `pytorchjob.build_job` — the kubeflow.org/v1 PyTorchJob (master + workers,
  8 GPUs per pod, H100 node selector, tolerations, /dev/shm, Secrets, torchrun
  into ``cai train sft|dpo``), with a deterministic name;
* `launcher.Launcher` — create or re-attach, watch, stream the master's log,
  delete on timeout or SIGTERM, fail with the job's condition message.

Nothing here imports `kubernetes` or `kubeflow.training` at module import
time: the laptop path never needs them.
"""
