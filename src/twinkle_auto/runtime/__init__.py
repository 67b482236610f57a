"""The training-script side of twinkle-auto: standard library only, so it imports in milliseconds.

`from twinkle_auto.runtime import TrainingRuntime` is the one line a training script needs.
"""

from twinkle_auto.runtime.training import TrainingRuntime

__all__ = ["TrainingRuntime"]
