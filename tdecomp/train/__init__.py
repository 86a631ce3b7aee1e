"""Training engine: tasks, callbacks, the Trainer and its checkpointing."""

from ..tasks import ClassificationTask, Task
from .callbacks import Callback, StepInfo, TrainingState
from .distill import DistillationTask
from .trainer import Trainer, TrainingDiverged, fit, train

__all__ = ["Callback", "ClassificationTask", "DistillationTask", "StepInfo", "Task", "Trainer", "TrainingDiverged",
           "TrainingState", "fit",
           "train"]
