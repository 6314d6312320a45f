"""The runtime: how one pipeline step runs, the code every KFP component calls.

* `steps` — the typed step registry: the one list of step names, each step's stage, inputs, config
  sections, teacher and kind (generation, training, cpu);
* `artifacts` — the file names inside a step's artifact (`_stage.json`, the manifest, the data files);
* `adapters` — per step, how its stage is called (`StepContext` -> `StageResult`);
* `engine` — `execute`: parse the payload, fingerprint, reuse or run, publish.

This `__init__` imports nothing: the cluster config reads `steps` while the config is being built,
and the engine imports the config (components import `cai_core.runtime.engine`).
"""
