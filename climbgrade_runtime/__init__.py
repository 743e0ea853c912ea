"""climbgrade runtime: grade climbing-board routes with an exported ONNX model, no torch needed.

from climbgrade_runtime import GradePredictor
predictor = GradePredictor.load()          # the model shipped in exports/
route = {"board": "kilter", "layout_id": 1, "angle": 40, "frames": "p1145r12..."}
predictor.predict(route)                   # its grade
predictor.sweep(route)                     # at every angle of its board, in one run
predictor.explain(route)                   # what each hold does (and the crux)
predictor.mirror(route)                    # its left-right mirror, graded (boards with mirrored holes)
"""

from .errors import ClimbgradeError, DatabaseError, ModelError, RouteError
from .insight import AngleGrade, AngleSpec, Explanation, HoldEffect, Mirror, Sweep, parse_angle_spec
from .predictor import GradePredictor
from .results import Prediction, RouteFailure
from .routes import Route

__all__ = [
    "AngleGrade",
    "AngleSpec",
    "ClimbgradeError",
    "DatabaseError",
    "Explanation",
    "GradePredictor",
    "HoldEffect",
    "Mirror",
    "ModelError",
    "Prediction",
    "Route",
    "RouteError",
    "RouteFailure",
    "Sweep",
    "parse_angle_spec",
]
