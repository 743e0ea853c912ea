"""`cg-serve`: the gym kiosk on uvicorn. Options only; the app is climbgrade_runtime.serve.app.

The model and databases are checked before the server listens, so a bad one is one line on stderr
(exit 2), never a traceback; the app's lifespan warms the model up before the first request is read. SIGTERM and SIGINT
shut the server down cleanly (exit 0): uvicorn finishes the requests in flight.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import signal
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..cli import CATALOG_OPTION, DB_HELP, EXIT_BAD_INPUT, MODEL_OPTION
from ..errors import ClimbgradeError
from ..predictor import GradePredictor
from .site import export_site
from .worker import MAX_QUEUE, TIMEOUT_S

if TYPE_CHECKING:
    from fastapi import FastAPI

NO_EXTRA = "error: cg-serve needs the serve extra: pip install 'climbgrade[serve]'"
OPTIONS_ENV = "CLIMBGRADE_SERVE_OPTIONS"  # --workers N > 1: how each worker process builds its app
GRACEFUL_SHUTDOWN_S = 5  # on SIGTERM, how long requests in flight may take to finish


@dataclass(frozen=True)
class ServeOptions:
    """What an app is built from: the same in cg-serve's process and in each --workers process."""

    model: str | None = None
    databases: tuple[str, ...] = ()
    cors_origin: str | None = None
    threads: int = 1
    max_queue: int = MAX_QUEUE
    timeout_s: float = TIMEOUT_S
    catalog: str | None = None


def build_app(options: ServeOptions) -> FastAPI:
    """Load the model and open the databases; ClimbgradeError names what cannot be used."""
    from .app import create_app

    predictor = GradePredictor.load(options.model, intra_op_threads=options.threads)
    return create_app(
        predictor,
        databases=options.databases,
        catalog=options.catalog,
        cors_origin=options.cors_origin,
        max_queue=options.max_queue,
        timeout_s=options.timeout_s,
    )


def worker_app() -> FastAPI:
    """The app of one --workers process (uvicorn's app factory): built from the options cg-serve left in the environment."""
    data = json.loads(os.environ[OPTIONS_ENV])
    return build_app(ServeOptions(**{**data, "databases": tuple(data["databases"])}))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@MODEL_OPTION
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback makes the kiosk reachable from the network.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port; 0 picks a free one."
)
@click.option(
    "--db",
    "databases",
    multiple=True,
    metavar="[BOARD=]PATH",
    help=f"Database whose climbs the page can search: {DB_HELP} (repeatable; opened read-only).",
)
@CATALOG_OPTION
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes, each loading the model (for more cores than one process keeps busy).",
)
@click.option("--cors", "cors_origin", default=None, metavar="ORIGIN", help="Allow this web origin to call the API.")
@click.option(
    "--threads", type=click.IntRange(min=1), default=1, show_default=True, help="onnxruntime intra-op threads."
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=1),
    default=MAX_QUEUE,
    show_default=True,
    help="Requests that may wait for the model; past them, 503 with Retry-After.",
)
@click.option(
    "--export-site",
    "export_dir",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR",
    help="Write the kiosk as a static site into DIR (grades offline on the device, no climb search) and exit.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=TIMEOUT_S,
    show_default=True,
    help="Seconds a request may wait for the model before it is answered 503 with Retry-After.",
)
def main(
    model_path: str | None,
    host: str,
    port: int,
    databases: tuple[str, ...],
    catalog: str | None,
    workers: int,
    cors_origin: str | None,
    threads: int,
    max_queue: int,
    export_dir: Path | None,
    timeout_s: float,
) -> None:
    """Serve the kiosk page and the HTTP API (POST /v1/grade, /v1/explain, /v1/picture; described at /openapi.json).

    Binds 127.0.0.1 unless --host says otherwise. Prints the page's URL once it is listening. With
    --export-site DIR, writes the kiosk as static files instead (no server, no serve extra needed).
    """
    if export_dir is not None:
        _export(model_path, export_dir, databases)
        return
    try:
        import fastapi  # noqa: F401 (the app's; checked here to say what is missing in one line)
        import uvicorn
        from uvicorn.supervisors import Multiprocess
    except ImportError:
        click.echo(NO_EXTRA, err=True)
        sys.exit(EXIT_BAD_INPUT)
    options = ServeOptions(model_path, databases, cors_origin, threads, max_queue, timeout_s, catalog)
    try:
        app = build_app(options)
        listener = _listen(host, port)
    except ClimbgradeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    search = app.state.search
    for database in search.boards_unknown_to_model() if search is not None else ():
        click.echo(f"warning: the model grades no layout of {database}: none of its climbs can be found", err=True)
    if workers > 1:
        os.environ[OPTIONS_ENV] = json.dumps(asdict(options))
    config = uvicorn.Config(
        app if workers == 1 else f"{__name__}:worker_app",
        factory=workers > 1,
        workers=workers,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    # The signal handlers are in place before the URL is printed, so a SIGTERM or SIGINT sent as soon as
    # it shows still stops the server cleanly (exit 0).
    if workers == 1:
        server = uvicorn.Server(config)
        # uvicorn installs its own while it runs; before, this one stops it; after, uvicorn re-raises the
        # signal it stopped on, and this one takes it instead of the process dying of it.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _sig, _frame: setattr(server, "should_exit", True))
        _announce(host, listener)
        server.run(sockets=[listener])
    else:
        # Each worker process loads its own model and opens its own databases; this one only checked them.
        if search is not None:
            search.close()
        del app
        supervisor = Multiprocess(config, sockets=[listener])  # queues signals from here on
        _announce(host, listener)
        supervisor.run()


def _export(model_path: str | None, folder: Path, databases: tuple[str, ...]) -> None:
    """--export-site: the kiosk's files into `folder`, one line saying where and how to serve them."""
    try:
        predictor = GradePredictor.load(model_path)
        written = export_site(predictor.model_path, folder)
    except (ClimbgradeError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if databases:
        click.echo("warning: --db is not part of an exported site: climb search needs cg-serve --db", err=True)
    size = sum((folder / name).stat().st_size for name in written)
    click.echo(
        f"wrote the kiosk to {folder} ({len(written)} files, {size / 1e6:.1f} MB); serve it with any static "
        f"web server, e.g. python -m http.server -d {shlex.quote(str(folder))}"
    )


def _announce(host: str, listener: socket.socket) -> None:
    """The URL line (flushed: scripts and tests wait for it), after a warning if the network can reach it."""
    bound_host, bound_port = listener.getsockname()[:2]
    where = f"[{bound_host}]" if ":" in bound_host else bound_host
    if not _is_loopback(host):
        click.echo(
            f"warning: --host {host}: the kiosk is reachable on the network by anyone who can reach this machine",
            err=True,
        )
    click.echo(f"climbgrade kiosk on http://{where}:{bound_port}/")
    sys.stdout.flush()


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: a free one), made here so the URL printed is the real one."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(2048)
    except OSError as exc:
        raise ClimbgradeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    listener.set_inheritable(True)
    return listener


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
