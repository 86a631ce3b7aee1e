"""Training engine: tasks, callbacks, the Trainer and its checkpointing."""

from ..tasks import ClassificationTask, Task
from .callbacks import Callback, StepInfo
from .trainer import Trainer, TrainingDiverged, train

__all__ = ["Callback", "ClassificationTask", "StepInfo", "Task", "Trainer", "TrainingDiverged", "train"]
