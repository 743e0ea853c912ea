"""climbgrade runtime: grade climbing-board routes with an exported ONNX model, no torch needed.

    from climbgrade_runtime import GradePredictor
    predictor = GradePredictor.load()          # the model shipped in exports/
    predictor.predict({"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1145r12..."})
"""

from .errors import ClimbgradeError, DatabaseError, ModelError, RouteError
from .predictor import GradePredictor, Prediction, RouteFailure
from .routes import Route

__all__ = [
    "ClimbgradeError",
    "DatabaseError",
    "GradePredictor",
    "ModelError",
    "Prediction",
    "Route",
    "RouteError",
    "RouteFailure",
]
