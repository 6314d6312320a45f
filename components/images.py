"""Container images of the components.

On a cluster each component runs in its image; locally (kfp.local
SubprocessRunner) the image is only a label and the code runs in this Python.
`cai compile` sets the registry and tag before the components are imported.
"""
import os

import cai_core

CORE_IMAGE = os.environ.get("CAI_CORE_IMAGE", f"ghcr.io/cai-project/cai-core:{cai_core.__version__}")
TRAINER_IMAGE = os.environ.get("CAI_TRAINER_IMAGE", f"ghcr.io/cai-project/cai-trainer:{cai_core.__version__}")
