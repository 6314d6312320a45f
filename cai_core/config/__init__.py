"""The run configuration, one module per concern.

* `base` — `ConfigBase`: typed, frozen config dataclasses built from plain dicts (every stage config);
* `run` — `RunConfig` and its shared sections (model, teacher);
* `cluster` — `ClusterConfig`: where the pipeline runs on a cluster (data only);
* `loading` — the YAML loader, `--set` overrides, `load_run_config`, `load_cluster_run_config`;
* `docs` — the configuration reference, generated from the config classes.

This `__init__` imports nothing: every stage imports `config.base`, and `run` imports every stage.
"""
