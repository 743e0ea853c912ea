"""The API's request and answer shapes, as pydantic models: what /openapi.json (and /docs) describe.

They describe shapes only. A route's rules (its board, layout, angle, holds) live once, in
`routes.parse_route` and the predictor, which read every body: a well-shaped route the model cannot
grade is a 422 with cg-infer's message. Answers are built by the library's `to_dict`s (the same JSON as
cg-infer's), so handlers return them as they are: these models document them, nothing re-validates them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/{model}"
Label = str | int | float


class Hold(BaseModel):
    """One hold of a route: a placement (hole) of the layout and its role (a name, or an Aurora role id)."""

    model_config = ConfigDict(extra="forbid")
    placement_id: int = Field(examples=[1145])
    role: Annotated[str, Field(min_length=1)] | int = Field(examples=["start"])


class _Route(BaseModel):
    # Other keys are allowed: the answer's warnings name them. id, uuid and name are echoed back.
    model_config = ConfigDict(extra="allow")
    board: str = Field(min_length=1, examples=["kilter"])
    layout_id: int = Field(examples=[1])
    angle: int = Field(examples=[40])
    id: Any = Field(None, description="echoed back in the answer when a string or a number")
    uuid: Any = Field(None, description="echoed back in the answer when a string or a number")
    name: Any = Field(None, description="echoed back in the answer when a string or a number")


class RouteFrames(_Route):
    """A route as Aurora frames (`p<placement>r<role id>` repeated), as boardlib databases store it."""

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["holds"]}})
    frames: str = Field(examples=["p1145r12p1200r13p1300r14"])


class RouteHolds(_Route):
    """A route as a list of holds (an empty list: the bare board, for /v1/picture)."""

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["frames"]}})
    holds: list[Hold]


class _Graded(BaseModel):
    difficulty: float = Field(description="Aurora difficulty (10 = 4a ... 33 = 9a)")
    low: float | None = Field(None, description="the model's calibrated interval, when it has one")
    high: float | None = None
    font: str
    v_grade: str


class _Numbered(BaseModel):
    """A route's slot in the request (0 for one route) and the labels it gave (id, uuid, name)."""

    index: int
    id: Label | None = None
    uuid: Label | None = None
    name: Label | None = None


class Answer(_Graded, _Numbered):
    """A graded route: cg-infer --format json's answer."""

    board: str
    layout_id: int
    angle: int
    warnings: list[str]


class RouteFailure(_Numbered):
    """A route of a list that could not be graded, in its slot: why."""

    error: str


class AngleAnswer(_Graded):
    angle: int


class HoldEffect(BaseModel):
    placement_id: int
    role: str
    effect: float | None = Field(description="difficulty without the hold minus with it; None for an only hold")


class MirrorAnswer(_Graded):
    frames: str


class Explained(Answer):
    """cg-infer --angles all --explain --mirror for one route."""

    angles: list[AngleAnswer]
    holds: list[HoldEffect]
    crux: int | None
    mirror: MirrorAnswer | None


class ErrorAnswer(BaseModel):
    """Every refusal: one line saying why."""

    error: str = Field(examples=["angle 41 is not an angle of kilter layout 1 (angles: 0, 5, ..., 70)"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    model: str
    sha256: str
    uptime_s: float


class Placement(BaseModel):
    id: int
    x: float
    y: float


class Layout(BaseModel):
    board: str
    layout_id: int
    name: str
    angles: list[int]
    roles: dict[str, int] = Field(description="role name -> the Aurora role id the page writes in frames")
    has_mirrors: bool
    placements: list[Placement] = Field(description="the layout's holes, in board units, y up")


class Layouts(BaseModel):
    layouts: list[Layout]
    model: Health
    search: bool = Field(description="whether /v1/climbs is on (cg-serve --db)")


class CommunityGrade(BaseModel):
    angle: int
    difficulty: float
    font: str
    v_grade: str
    ascents: int


class Climb(BaseModel):
    uuid: str
    name: str
    board: str
    layout_id: int
    frames: str
    angles: list[CommunityGrade]


class Climbs(BaseModel):
    climbs: list[Climb]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


ROUTE = {"oneOf": [_ref(RouteFrames), _ref(RouteHolds)]}
ROUTES = {
    "type": "array",
    "items": {"anyOf": [*ROUTE["oneOf"], {"description": "anything else: answered as an error in its slot"}]},
}
# The request bodies' models, for the app's OpenAPI components (the handlers read bodies themselves).
_, BODY_SCHEMAS = models_json_schema([(m, "validation") for m in (RouteFrames, RouteHolds)], ref_template=REF)


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An operation's `openapi_extra`: a required JSON body of `schema`."""
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "description": description, "content": content}}
