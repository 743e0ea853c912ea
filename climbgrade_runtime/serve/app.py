"""The kiosk's HTTP API and page: thin handlers over GradePredictor and the answers cg-infer writes.

Every answer is built by the library (Prediction / RouteInsight `to_dict`, render_route_svg), so the
API and cg-infer cannot drift apart. Model calls block, so the handlers that make them are plain
`def`s: FastAPI runs them in its thread pool and the event loop keeps serving (GradePredictor is
thread-safe). Everything else (the page, /healthz, /v1/layouts, the error handlers) is `async def`, so
it answers on the event loop even while every thread-pool token waits on the model. Errors are one-line
JSON `{"error": ...}`; nothing a request sends takes the server down.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import RouteError
from ..geometry import LayoutGeometry
from ..inputs import decode_json
from ..insight import Explanation, InsightRequest, RouteInsight, parse_angle_spec
from ..predictor import GradePredictor
from ..routes import parse_route
from ..svg import picture_title, render_route_svg
from ..tokenizer import ResolvedRoute, check_angle
from .climbs import MAX_LIMIT, ClimbSearch

STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# The page runs only its own files: no inline script or style, no other origin, pictures inline.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The explain answer: cg-infer --angles all --explain --mirror for one route.
EXPLAIN_REQUEST = InsightRequest(parse_angle_spec("all"), explain=True, mirror=True)
ROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A route as cg-infer reads it: frames (Aurora p<placement>r<role>...) or holds.",
    "required": ["board", "layout_id", "angle"],
    "properties": {
        "board": {"type": "string", "example": "kilter"},
        "layout_id": {"type": "integer", "example": 1},
        "angle": {"type": "integer", "example": 40},
        "frames": {"type": "string", "example": "p1145r12p1200r13p1300r14"},
        "holds": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"placement_id": {"type": "integer"}, "role": {"type": ["string", "integer"]}},
            },
        },
        "id": {}, "uuid": {}, "name": {},
    },
}  # fmt: skip


class ApiError(Exception):
    """A request the API refuses: its status and the one-line message the client gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ApiJSON(JSONResponse):
    """JSON as one line of ASCII: a label holding a lone surrogate (valid JSON input) still encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def error(status: int, message: str) -> ApiJSON:
    return ApiJSON({"error": message}, status_code=status)


def request_json(body: bytes) -> Any:
    """The request body as JSON; ApiError 400 with cg-infer's words for the same bytes if it is not."""
    try:
        return decode_json(body, "request body")
    except RouteError as exc:
        raise ApiError(400, str(exc)) from exc


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 before any of it is parsed.

    Content-Length is checked first; a body sent without one (chunked) is counted as it arrives.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"request body is over the limit of {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await error(413, self.message)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ApiError(413, self.message)  # raised in the handler reading the body: answered as JSON
            return message

        await self.app(scope, counted, send)


class SecurityHeaders:
    """ASGI middleware: nosniff on every answer; the page and its files also get the CSP."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = scope["path"] == "/" or scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if page:
                    headers["Content-Security-Policy"] = PAGE_CSP
                    headers["Referrer-Policy"] = "no-referrer"
            await send(message)

        await self.app(scope, receive, with_headers)


async def body_bytes(request: Request) -> bytes:
    """The raw request body (BodyLimit bounds it); decoded in the thread pool, not on the event loop."""
    return await request.body()


def create_app(
    predictor: GradePredictor,
    *,
    databases: Sequence[str] = (),
    cors_origin: str | None = None,
    max_body_bytes: int = 1_000_000,
    max_routes: int = 1000,
    max_model_runs: int | None = None,
) -> FastAPI:
    """The kiosk app for `predictor`; `databases` ([BOARD=]PATH) turn on /v1/climbs (DatabaseError if unusable).

    At most `max_model_runs` requests run the model at once (default: one per CPU); the others wait
    their turn. More would only share the same cores, and every concurrent onnxruntime run keeps its
    own buffers: measured, 8 concurrent batches of 100 routes took the server from 150 to 830 MiB.
    """
    search = ClimbSearch(databases, predictor.tokenizer, predictor.grades) if databases else None
    started = time.monotonic()
    model = {"model": predictor.model_path.name, "sha256": predictor.sidecar.model_sha256}
    layouts = [_layout_dict(layout) for layout in predictor.tokenizer.layouts.values()]
    # The page's files, read once: answering them needs no thread-pool token, so a kiosk whose model is
    # busy still loads its page. Only these names are served: no request can name a file.
    files = {
        path.name: (path.read_bytes(), STATIC_TYPES[path.suffix])
        for path in STATIC.iterdir()
        if path.suffix in STATIC_TYPES
    }
    model_runs = threading.BoundedSemaphore(max_model_runs or os.cpu_count() or 1)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:  # the server stops: its database connections close with it
            if search is not None:
                search.close()

    app = FastAPI(
        title="climbgrade kiosk",
        summary="Grade climbing-board routes: the same answers as cg-infer.",
        default_response_class=ApiJSON,
        lifespan=lifespan,
    )
    app.state.search = search  # for cg-serve's start-up warnings

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        path = request.url.path
        if exc.status_code == 404:
            message = f"no such page: {path}"
        elif exc.status_code == 405:
            allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "another method")
            message = f"{request.method} is not allowed on {path}: use {allowed}"
        else:
            message = str(exc.detail)
        return ApiJSON({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        where = " ".join(str(part) for part in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> Response:
        # The traceback goes to the server's log (uvicorn), never to the client.
        return error(500, f"internal error ({type(exc).__name__}); the server is still up")

    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if cors_origin is not None:
        app.add_middleware(
            CORSMiddleware, allow_origins=[cors_origin], allow_methods=["GET", "POST"], allow_headers=["Content-Type"]
        )

    def health() -> dict[str, Any]:
        return {"status": "ok", **model, "uptime_s": round(time.monotonic() - started, 3)}

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return _file_response(files["index.html"])

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in files:
            raise ApiError(404, f"no such page: /static/{name}")
        return _file_response(files[name])

    @app.get("/healthz", summary="Liveness and the model served")
    async def healthz() -> Response:
        return ApiJSON(health())

    @app.get("/v1/layouts", summary="The boards and layouts the model grades, with their holes")
    async def get_layouts() -> Response:
        return ApiJSON({"layouts": layouts, "model": health(), "search": search is not None})

    @app.post("/v1/grade", summary="Grade one route (an object) or many (a list), as cg-infer --format json does",
              openapi_extra=_json_body({"oneOf": [ROUTE_SCHEMA, {"type": "array", "items": ROUTE_SCHEMA}]}))  # fmt: skip
    def grade(body: bytes = Depends(body_bytes)) -> Response:
        routes = request_json(body)
        if isinstance(routes, list):
            if len(routes) > max_routes:
                raise ApiError(413, f"the request holds {len(routes)} routes; the limit is {max_routes} per request")
            with model_runs:
                return ApiJSON([r.to_dict() for r in predictor.predict_many(routes)])
        try:
            with model_runs:
                return ApiJSON(predictor.predict(routes).to_dict())
        except RouteError as exc:
            raise ApiError(422, str(exc)) from exc

    @app.post("/v1/explain", summary="One route graded, swept over its board's angles, each hold's effect, its mirror",
              openapi_extra=_json_body(ROUTE_SCHEMA))  # fmt: skip
    def explain(
        body: bytes = Depends(body_bytes),
        picture: bool = Query(False, description="also the route's picture (as /v1/picture draws it), as SVG text"),
    ) -> Response:
        route = request_json(body)
        with model_runs:
            [result] = next(predictor.insight_stream([route], EXPLAIN_REQUEST))
        if not isinstance(result, RouteInsight):
            raise ApiError(422, result.error)
        answer = result.to_dict()
        if picture and result.explanation is not None:  # the kiosk's one call per tap: numbers and their board
            answer["picture"] = _route_picture(result.route, result.explanation)
        return ApiJSON(answer)

    @app.post("/v1/picture", summary="The route (or the bare board) as SVG, every hole a tap target",
              response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}},
              openapi_extra=_json_body(ROUTE_SCHEMA))  # fmt: skip
    def picture(body: bytes = Depends(body_bytes)) -> Response:
        route = request_json(body)
        if isinstance(route, dict) and route.get("frames") == "":  # the bare board, spelled as frames
            route = {k: v for k, v in route.items() if k != "frames"} | {"holds": []}
        try:
            with model_runs:
                return Response(_picture(predictor, route), media_type="image/svg+xml")
        except RouteError as exc:
            raise ApiError(422, str(exc)) from exc

    @app.get("/v1/climbs", summary="Climbs of the --db databases by name or uuid prefix, with community grades")
    def climbs(
        q: str = Query(min_length=1, max_length=100, description="text in the name, or the start of the uuid"),
        board: str | None = None,
        layout_id: int | None = None,
        limit: int = Query(20, ge=1, le=MAX_LIMIT),
    ) -> Response:
        if search is None:
            raise ApiError(404, "climb search is off: start cg-serve with --db PATH to search a database's climbs")
        return ApiJSON({"climbs": [c.to_dict() for c in search.search(q, board, layout_id, limit)]})

    return app


def _file_response(file: tuple[bytes, str]) -> Response:
    content, media_type = file
    return Response(content, media_type=media_type)


def _layout_dict(layout: LayoutGeometry) -> dict[str, Any]:
    """What the page draws a layout from: its holes (board units, y up), angles, role ids, mirrors or not."""
    return {
        "board": layout.board,
        "layout_id": layout.layout_id,
        "name": layout.name,
        "angles": list(layout.angles),
        "roles": dict(layout.role_ids),  # how the page spells a role in frames
        "has_mirrors": bool(layout.mirrors),
        "placements": [{"id": pid, "x": x, "y": y} for pid, (x, y) in sorted(layout.placements.items())],
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for a JSON body read by hand (so that its size is limited and its errors are ours)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _picture(predictor: GradePredictor, record: Any) -> str:
    """The kiosk's board for a route, explained first. No holds: the bare board."""
    route = parse_route(record)
    layout = predictor.tokenizer.layouts.get((route.board, route.layout_id))
    if layout is not None and not route.holds:
        check_angle(layout, route.angle)
        return render_route_svg(layout, (), f"{layout.name} at {route.angle}°", interactive=True)
    resolved = predictor.tokenizer.resolve(route)  # cg-infer's error for a route the model cannot take
    return _route_picture(resolved, predictor.explain(route))


def _route_picture(route: ResolvedRoute, explanation: Explanation) -> str:
    """Every hole a tap target, the route's holds in role colours, its grade in the title, each hold's effect."""
    title = picture_title(explanation.prediction)
    return render_route_svg(route.layout, route.holds, title, explanation.effects, interactive=True)
