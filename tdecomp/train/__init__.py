"""Training engine: tasks, callbacks, the Trainer and its checkpointing."""

from ..tasks import ClassificationTask, Task
from .callbacks import Callback, StepInfo
from .distill import DistillationTask  # registers the distill config key's callback
from .trainer import Trainer, TrainingDiverged, train

__all__ = ["Callback", "ClassificationTask", "DistillationTask", "StepInfo", "Task", "Trainer", "TrainingDiverged",
           "train"]
