"""Training engine: tasks, callbacks, the Trainer and its checkpointing."""

from .callbacks import Callback, StepInfo
from .tasks import ClassificationTask, Task
from .trainer import Trainer, TrainingDiverged, train

__all__ = ["Callback", "ClassificationTask", "StepInfo", "Task", "Trainer", "TrainingDiverged", "train"]
