"""A learned router between a strong and a weak model: features, model, calibration, artifact."""

from gateway.routing.calibration import (
    CurvePoint,
    calibration_table,
    cheapest_point,
    quality_curve,
    random_share,
)
from gateway.routing.data import LabelledSet, RouterDataError, load_labelled, read_excluded
from gateway.routing.features import FeatureSpec, Featurizer
from gateway.routing.router import Decision, Router, TrainingReport, held_out_scores, train_router

__all__ = [
    "CurvePoint", "Decision", "FeatureSpec", "Featurizer", "LabelledSet", "Router", "RouterDataError",
    "TrainingReport", "calibration_table", "cheapest_point", "held_out_scores", "load_labelled",
    "quality_curve", "random_share", "read_excluded", "train_router",
]  # fmt: skip
