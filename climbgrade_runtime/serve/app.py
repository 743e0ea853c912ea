"""The kiosk's HTTP API and page: thin async handlers over GradePredictor and the answers cg-infer writes.

Every answer is built by the library (Prediction / RouteInsight `to_dict`, render_route_svg), so the
API and cg-infer cannot drift apart. Every model call goes through the app's one ModelWorker (its own
thread, grade requests batched), so the event loop never waits on the model: the page, /healthz and
/v1/layouts answer while the model is saturated, and a request the model cannot take in time is a 503
with Retry-After. Bodies are read by the handlers (so their size is limited and their errors are
cg-infer's); models.py describes them and the answers for /openapi.json. Errors are one-line JSON
`{"error": ...}`; nothing a request sends takes the server down.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import RouteError
from ..geometry import LayoutGeometry
from ..inputs import decode_json
from ..insight import Explanation, InsightRequest, RouteInsight, parse_angle_spec
from ..predictor import GradePredictor
from ..results import Prediction
from ..routes import parse_route
from ..svg import picture_title, render_route_svg
from ..tokenizer import ResolvedRoute, check_angle
from . import models
from .climbs import MAX_LIMIT, ClimbSearch
from .site import SiteFile, site_files
from .worker import MAX_QUEUE, TIMEOUT_S, ModelWorker, Overloaded

# The page runs only its own files: no inline script or style, no other origin, pictures inline; its one
# allowance is onnxruntime-web's WebAssembly. index.html carries the same policy (less frame-ancestors,
# which only a header can set) for static hosts.
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The explain answer: cg-infer --angles all --explain --mirror for one route.
EXPLAIN_REQUEST = InsightRequest(parse_angle_spec("all"), explain=True, mirror=True)
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": models.ErrorAnswer, "description": "the body is not JSON"},
    413: {"model": models.ErrorAnswer, "description": "the body (or its list of routes) is over the limit"},
    422: {"model": models.ErrorAnswer, "description": "not a route this model grades (cg-infer's message)"},
    503: {"model": models.ErrorAnswer, "description": "the model is saturated: retry", "headers": RETRY_AFTER},
}


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


def error(status: int, message: str, headers: dict[str, str] | None = None) -> ApiJSON:
    return ApiJSON({"error": message}, status_code=status, headers=headers)


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
        page = scope["path"] in ("/", "/sw.js") or scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if page:
                    headers["Content-Security-Policy"] = PAGE_CSP
                    headers["Referrer-Policy"] = "no-referrer"
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass(frozen=True)
class Kiosk:
    """What the handlers share, made once per app: reached through the dependencies below (async, so
    that resolving them takes no thread-pool hop)."""

    predictor: GradePredictor
    worker: ModelWorker
    search: ClimbSearch | None
    site: dict[str, SiteFile]
    layouts: list[dict[str, Any]]
    model: dict[str, str]
    started: float
    max_routes: int

    def health(self) -> dict[str, Any]:
        return {"status": "ok", **self.model, "uptime_s": round(time.monotonic() - self.started, 3)}


async def get_kiosk(request: Request) -> Kiosk:
    kiosk: Kiosk = request.app.state.kiosk
    return kiosk


async def get_predictor(kiosk: Annotated[Kiosk, Depends(get_kiosk)]) -> GradePredictor:
    """The predictor the model endpoints use (tests override it with app.dependency_overrides)."""
    return kiosk.predictor


async def get_worker(kiosk: Annotated[Kiosk, Depends(get_kiosk)]) -> ModelWorker:
    return kiosk.worker


async def route_body(request: Request) -> Any:
    """The request body as JSON (BodyLimit bounds it); 400 with cg-infer's words for the same bytes if it is not."""
    try:
        return decode_json(await request.body(), "request body")
    except RouteError as exc:
        raise ApiError(400, str(exc)) from exc


KioskDep = Annotated[Kiosk, Depends(get_kiosk)]
PredictorDep = Annotated[GradePredictor, Depends(get_predictor)]
WorkerDep = Annotated[ModelWorker, Depends(get_worker)]
BodyDep = Annotated[Any, Depends(route_body)]
router = APIRouter()


@router.get("/", include_in_schema=False)
async def page(kiosk: KioskDep) -> Response:
    return _file_response(kiosk.site["index.html"])


@router.get("/sw.js", include_in_schema=False)
async def service_worker(kiosk: KioskDep) -> Response:
    return _file_response(kiosk.site["sw.js"])


@router.get("/static/{name:path}", include_in_schema=False)
async def static(name: str, kiosk: KioskDep) -> Response:
    """The page's files, grader.js, onnxruntime-web and the model: only the site's own names are served."""
    found = kiosk.site.get(f"static/{name}")
    if found is None:
        raise ApiError(404, f"no such page: /static/{name}")
    return _file_response(found)


@router.get("/healthz", summary="Liveness and the model served", response_model=models.Health)
async def healthz(kiosk: KioskDep) -> Response:
    return ApiJSON(kiosk.health())


@router.get(
    "/v1/layouts", summary="The boards and layouts the model grades, with their holes", response_model=models.Layouts
)
async def get_layouts(kiosk: KioskDep) -> Response:
    return ApiJSON({"layouts": kiosk.layouts, "model": kiosk.health(), "search": kiosk.search is not None})


@router.post(
    "/v1/grade",
    summary="Grade one route (an object) or many (a list), as cg-infer --format json does",
    response_model=models.Answer | list[models.Answer | models.RouteFailure],
    responses=ERRORS,
    openapi_extra=models.json_body(
        {"oneOf": [*models.ROUTE["oneOf"], models.ROUTES]}, "a route, or a list of routes (each answered in its slot)"
    ),
)
async def grade(body: BodyDep, kiosk: KioskDep, predictor: PredictorDep, worker: WorkerDep) -> Response:
    if isinstance(body, list):
        if len(body) > kiosk.max_routes:
            raise ApiError(413, f"the request holds {len(body)} routes; the limit is {kiosk.max_routes} per request")
        return ApiJSON([r.to_dict() for r in await worker.grade(predictor, body)])
    [result] = await worker.grade(predictor, [body])
    if not isinstance(result, Prediction):
        raise ApiError(422, result.error)
    return ApiJSON(result.to_dict())


@router.post(
    "/v1/explain",
    summary="One route graded, swept over its board's angles, each hold's effect, its mirror",
    response_model=models.Explained,
    responses=ERRORS,
    openapi_extra=models.json_body(models.ROUTE, "a route"),
)
async def explain(body: BodyDep, predictor: PredictorDep, worker: WorkerDep) -> Response:
    def insight(model: GradePredictor) -> dict[str, Any]:
        [result] = next(model.insight_stream([body], EXPLAIN_REQUEST))
        if not isinstance(result, RouteInsight):
            raise ApiError(422, result.error)
        return result.to_dict()

    return ApiJSON(await worker.call(predictor, insight))


@router.post(
    "/v1/picture",
    summary="The route (or the bare board) as SVG, every hole a tap target",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}}}, **ERRORS},
    openapi_extra=models.json_body(models.ROUTE, 'a route; no holds (or frames ""): the bare board'),
)
async def picture(body: BodyDep, predictor: PredictorDep, worker: WorkerDep) -> Response:
    if isinstance(body, dict) and body.get("frames") == "" and "holds" not in body:  # the bare board, as frames
        body = {k: v for k, v in body.items() if k != "frames"} | {"holds": []}
    try:
        svg = await worker.call(predictor, lambda model: _picture(model, body))
    except RouteError as exc:
        raise ApiError(422, str(exc)) from exc
    return Response(svg, media_type="image/svg+xml")


@router.get(
    "/v1/climbs",
    summary="Climbs of the --db databases by name or uuid prefix, with community grades",
    response_model=models.Climbs,
    responses={
        404: {"model": models.ErrorAnswer, "description": "climb search is off (no --db)"},
        422: {"model": models.ErrorAnswer, "description": "a query parameter out of its range"},
    },
)
def climbs(
    kiosk: KioskDep,
    q: Annotated[str, Query(min_length=1, max_length=100, description="text in the name, or the start of the uuid")],
    board: str | None = None,
    layout_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
) -> Response:
    if kiosk.search is None:
        raise ApiError(404, "climb search is off: start cg-serve with --db PATH to search a database's climbs")
    return ApiJSON({"climbs": [c.to_dict() for c in kiosk.search.search(q, board, layout_id, limit)]})


def create_app(
    predictor: GradePredictor,
    *,
    databases: Sequence[str] = (),
    catalog: str | None = None,
    cors_origin: str | None = None,
    max_body_bytes: int = 1_000_000,
    max_routes: int = 1000,
    max_queue: int = MAX_QUEUE,
    timeout_s: float = TIMEOUT_S,
) -> FastAPI:
    """The kiosk app for `predictor`; `databases` ([BOARD=]PATH; snapshots with `catalog`) turn on /v1/climbs.

    DatabaseError names a database that cannot be used.

    Its lifespan warms the model up and runs its ModelWorker: at most `max_queue` requests wait for the
    model, each at most `timeout_s` seconds; past either, a 503.
    """
    search = ClimbSearch(databases, predictor.tokenizer, predictor.grades, catalog) if databases else None
    worker = ModelWorker(max_queue=max_queue, timeout_s=timeout_s)
    kiosk = Kiosk(
        predictor=predictor,
        worker=worker,
        search=search,
        site=site_files(predictor.model_path, search=search is not None),  # read once; no request names a file
        layouts=[_layout_dict(layout) for layout in predictor.tokenizer.layouts.values()],
        model={"model": predictor.model_path.name, "sha256": predictor.sidecar.model_sha256},
        started=time.monotonic(),
        max_routes=max_routes,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        predictor.warm_up()  # the session opens now: the first tap is as fast as the rest
        worker.start()
        try:
            yield
        finally:  # the server stops: the worker answers what it holds, the databases close
            worker.stop()
            if search is not None:
                search.close()

    app = FastAPIOffline(
        title="climbgrade kiosk",
        summary="Grade climbing-board routes: the same answers as cg-infer.",
        default_response_class=ApiJSON,
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.kiosk = kiosk
    app.state.search = search  # for cg-serve's start-up warnings
    app.include_router(router)
    _add_body_schemas(app)
    _add_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if cors_origin is not None:
        app.add_middleware(
            CORSMiddleware, allow_origins=[cors_origin], allow_methods=["GET", "POST"], allow_headers=["Content-Type"]
        )
    return app


def _add_body_schemas(app: FastAPI) -> None:
    """The request bodies' models join the OpenAPI components (handlers read the bodies, so FastAPI does not)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            generate().setdefault("components", {}).setdefault("schemas", {}).update(models.BODY_SCHEMAS["$defs"])
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return error(exc.status, exc.message)

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, exc: Overloaded) -> Response:
        return error(503, str(exc), {"Retry-After": str(exc.retry_after_s)})

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


def _file_response(file: SiteFile) -> Response:
    return Response(file.content, media_type=file.media_type)


def _layout_dict(layout: LayoutGeometry) -> dict[str, Any]:
    """A layout for apps that draw a board (as the page does from the sidecar): holes (board units, y up), angles,
    role ids, mirrors or not."""
    return {
        "board": layout.board,
        "layout_id": layout.layout_id,
        "name": layout.name,
        "angles": list(layout.angles),
        "roles": dict(layout.role_ids),  # how the page spells a role in frames
        "has_mirrors": bool(layout.mirrors),
        "placements": [{"id": pid, "x": x, "y": y} for pid, (x, y) in sorted(layout.placements.items())],
    }


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
