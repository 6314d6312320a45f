"""DeepSpeed JSON configs (package data); see cai_core/deepspeed_configs.py."""
