"""Training engine: tasks, callbacks, the Trainer and its checkpointing."""

from ..tasks import ClassificationTask, Task
from .callbacks import Callback, StepInfo, TrainingState
from .trainer import Trainer, TrainingDiverged, fit, train

__all__ = ["Callback", "ClassificationTask", "StepInfo", "Task", "Trainer", "TrainingDiverged", "TrainingState", "fit",
           "train"]
