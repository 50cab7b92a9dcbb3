"""Stage 4, train: vectorized ensembles of shadow models."""

from truthserum.train.architectures import Architecture, build_model
from truthserum.train.augment import Augment
from truthserum.train.ensemble import Ensemble, OptimizerName, Schedule, TrainSettings, train_ensemble

__all__ = [
    "Architecture", "Augment", "Ensemble", "OptimizerName", "Schedule", "TrainSettings", "build_model",
    "train_ensemble",
]
