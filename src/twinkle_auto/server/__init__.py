"""server layer (see DESIGN.md): the Twinkle training server on Ray, one module per step.

`gpus` (nvidia-smi, CUDA_VISIBLE_DEVICES) → `plan` (who gets which GPUs) → `config`
(server_config.yaml in twinkle-kit's schema) → `cluster` (our Ray nodes on 127.0.0.1, or a joined
cluster) → `launch` (`python -m twinkle.server launch`) → `health` (only Twinkle's own answers count);
`manager` runs the pipeline, makes start idempotent and exclusive, and shuts down by recorded pid.
Nothing here imports Ray or twinkle-kit at import time: both are optional extras.
"""

from twinkle_auto.server.manager import ServerBusyError, ServerError, ServerManager, StartRequest
from twinkle_auto.server.plan import PlanError, SamplerRequest

__all__ = ["PlanError", "SamplerRequest", "ServerBusyError", "ServerError", "ServerManager", "StartRequest"]
