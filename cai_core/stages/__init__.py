"""Pipeline stages: one module each, a frozen `<Stage>Config` and a pure `run(...)`."""
