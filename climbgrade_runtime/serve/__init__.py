"""cg-serve: the gym kiosk (a page where a climber taps holds and sees the grade) and its HTTP API.

Needs the `serve` extra (FastAPI, uvicorn): `pip install 'climbgrade[serve]'`. Importing this package
does not import them; `create_app` does, on first use, so `cg-serve` without the extra can say so in one line.

from climbgrade_runtime import GradePredictor
from climbgrade_runtime.serve import create_app
app = create_app(GradePredictor.load())    # an ASGI app: run it with uvicorn, or test it with TestClient
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
