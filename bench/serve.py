"""Load benchmark of cg-serve on loopback: requests/s, p50/p99 latency, errors and server memory.

    .venv/bin/python bench/serve.py                         # 5,000 x 1 route, then 500 x 100 routes, 32 clients
    .venv/bin/python bench/serve.py --requests 500 --batch-requests 50 --clients 8   # a quick run

Starts a real `cg-serve --port 0` (the shipped model unless --model), then sends POST /v1/grade from
`--clients` concurrent HTTP clients (httpx, keep-alive): first `--requests` requests of one route each,
then `--batch-requests` requests of `--batch-size` routes each. Routes are real ones from
$CLIMBGRADE_DATA or ../shared/data when present, else examples/routes.json repeated. The clients run
on the same machine as the server and take CPU from it: the figures are for the pair. An error is a
non-200 answer, a transport failure or a route answered with an error; there must be none (with any,
the figures are printed and the run exits 1).
Nothing here is a timed test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx
import numpy as np
from sample_routes import load_routes

BIN = Path(sys.executable).parent
START_S = 120


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` and its child processes (the --workers processes), KiB."""
    total = 0
    for proc in [pid, *children(pid)]:
        try:
            status = Path(f"/proc/{proc}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


async def load(url: str, bodies: list[Any], clients: int) -> dict[str, Any]:
    """POST each body to /v1/grade from `clients` concurrent keep-alive clients; latencies, errors, rate."""
    latencies: list[float] = []
    errors: list[str] = []
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for body in queue:
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/grade", json=body)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                answers = response.json()
                for answer in answers if isinstance(answers, list) else [answers]:
                    if "error" in answer:
                        errors.append(f"route error: {answer['error']}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        seconds = time.perf_counter() - started
    ms = np.array(latencies) * 1e3
    return {
        "requests": len(bodies),
        "clients": clients,
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(bodies) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "errors": len(errors),
        "first_errors": errors[:3],
    }


@click.command()
@click.option("--requests", type=click.IntRange(min=1), default=5000, show_default=True, help="One-route requests.")
@click.option("--clients", type=click.IntRange(min=1), default=32, show_default=True, help="Concurrent clients.")
@click.option("--batch-requests", type=click.IntRange(min=0), default=500, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1, max=1000), default=100, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="cg-serve --threads.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="cg-serve --workers.")
@click.option("--model", "model_path", default=None, help="cg-serve --model (default: the shipped model).")
@click.option("--json", "json_out", is_flag=True, help="Print the figures as JSON.")
def main(
    requests: int,
    clients: int,
    batch_requests: int,
    batch_size: int,
    threads: int,
    workers: int,
    model_path: str | None,
    json_out: bool,
) -> None:
    """Run the load benchmark once and print its figures."""
    routes, source = load_routes(5000)
    command = [str(BIN / "cg-serve"), "--port", "0", "--threads", str(threads), "--workers", str(workers)]
    if model_path is not None:
        command += ["--model", model_path]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("climbgrade kiosk on "):
        server.kill()
        raise click.ClickException(f"cg-serve did not start: {line!r}")
    url = line.split(" on ", 1)[1].strip()
    try:
        httpx.get(url + "healthz", timeout=START_S).raise_for_status()
        asyncio.run(load(url, routes[:clients], clients))  # every connection opened, every worker warm
        rss_before = rss_kib(server.pid)
        single = asyncio.run(load(url, [routes[i % len(routes)] for i in range(requests)], clients))
        batches = [
            [routes[(i * batch_size + j) % len(routes)] for j in range(batch_size)] for i in range(batch_requests)
        ]
        batch = asyncio.run(load(url, batches, clients)) if batches else None
        rss_after = rss_kib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    report = {
        "command": " ".join(["bench/serve.py", *sys.argv[1:]]),
        "routes": source,
        "server": {"threads": threads, "workers": workers, "exit_code_on_sigterm": code},
        "single_route": single,
        f"{batch_size}_routes": batch,
        "server_rss_mib": {"before": round(rss_before / 1024, 1), "after": round(rss_after / 1024, 1)},
        "cpus": os.cpu_count(),
    }
    if json_out:
        click.echo(json.dumps(report, indent=1))
    else:
        click.echo(
            f"cg-serve --threads {threads} --workers {workers} on {url}; routes: {source}; {os.cpu_count()} CPUs"
        )
        click.echo(
            f"{'load':<24} {'requests':>8} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
        )
        for name, figures in (("1 route / request", single), (f"{batch_size} routes / request", batch)):
            if figures is not None:
                click.echo(
                    f"{name:<24} {figures['requests']:>8} {figures['clients']:>7} {figures['requests_per_s']:>8} "
                    f"{figures['p50_ms']:>8} {figures['p99_ms']:>8} {figures['errors']:>6}"
                )
                for error in figures["first_errors"]:
                    click.echo(f"  e.g. {error}")
        click.echo(
            f"server RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after; exit {code} on SIGTERM"
        )
    errors = sum(figures["errors"] for figures in (single, batch) if figures is not None)
    if errors:  # after the figures, so a failing run still shows what failed
        raise click.ClickException(f"{errors} requests or routes failed; a benchmark run must have none")


if __name__ == "__main__":
    main()
