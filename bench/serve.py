"""Load benchmark of cg-serve on loopback, driven by Debian's `hey` and `wrk` from separate processes.

    .venv/bin/python bench/serve.py                          # the full run: 20 s per load, a 10-minute soak
    .venv/bin/python bench/serve.py --duration 5 --soak 30   # a quick run

Starts a real `cg-serve --port 0` (the shipped model unless --model; `--serve-option` passes more), checks
that its answers equal `cg-infer --format json`'s for the same routes, warms it up, then runs, each for
`--duration` seconds: open loop (`hey`, `--rate` req/s of one route over 2, then 8 connections: hey's
connections fire in step, so these are bursts of 2 and of 8), one sequential client (`hey -c 1`),
closed loop (`wrk`, 32 connections), overload (`hey`, 256 connections: only 200 or 503 may come back),
and 100-route requests (`wrk`, 8 connections); then a soak (`hey`, `--rate` req/s for `--soak` seconds)
sampling the server's RSS. Routes are real ones from $CLIMBGRADE_DATA or ../shared/data when present,
else examples/routes.json. The load tools share the machine's cores with the server: the figures are for
the pair. A run with a transport error, a status other than 200 (or 503 under overload), or an answer
unequal to cg-infer's prints its figures and exits 1. Nothing here is a timed test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import httpx
from sample_routes import load_routes

BIN = Path(sys.executable).parent
START_S = 120
TOOLS = ("hey", "wrk")
INSTALL = "apt-get install hey wrk"
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BODY")):read("*a")
"""
WAIT_S = 30  # hey's and wrk's limit on one answer: slower ones count as transport errors
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def rss_mib(pid: int) -> float:
    """VmRSS of `pid` and its child processes (the --workers processes), MiB."""
    total = 0
    for proc in [pid, *children(pid)]:
        try:
            status = Path(f"/proc/{proc}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return round(total / 1024, 1)


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


def hey(url: str, body: Path, seconds: float, connections: int, rate: float | None = None) -> dict[str, Any]:
    """`hey` for `seconds`; with `rate`, paced at that many requests/s in all (open loop, as far as hey goes)."""
    command = ["hey", "-z", f"{seconds}s", "-c", str(connections), "-t", str(WAIT_S), "-m", "POST"]
    command += ["-T", "application/json"]
    if rate is not None:
        command += ["-q", f"{rate / connections:g}"]
    text = _run([*command, "-D", str(body), url], seconds)
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+\S", text.split("Error distribution:")[-1], re.M))
    errors = errors if "Error distribution:" in text else 0
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1]),  # type: ignore[index]
        "p50_ms": _hey_ms(text, 50),
        "p99_ms": _hey_ms(text, 99),
        "statuses": statuses,
        "transport_errors": errors,
    }


def _hey_ms(text: str, percent: int) -> float | None:
    match = re.search(rf"{percent}% in ([\d.]+) secs", text)
    return round(float(match[1]) * 1e3, 2) if match else None


def wrk(url: str, body: Path, seconds: float, connections: int, script: Path) -> dict[str, Any]:
    """`wrk` (closed loop: each connection sends its next request when its answer is in) for `seconds`."""
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", f"{WAIT_S}s", "--latency"]
    command += ["-s", str(script), url]
    text = _run(command, seconds, env={**os.environ, "BODY": str(body)})
    total = int(re.search(r"(\d+) requests in", text)[1])  # type: ignore[index]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1]),  # type: ignore[index]
        "p50_ms": _wrk_ms(text, 50),
        "p99_ms": _wrk_ms(text, 99),
        "statuses": {"2xx": total - (int(bad[1]) if bad else 0), "other": int(bad[1]) if bad else 0},
        "transport_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
    }


def _wrk_ms(text: str, percent: int) -> float:
    match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if match is None:
        raise click.ClickException(f"wrk printed no {percent}% latency:\n{text}")
    return round(float(match[1]) * UNITS[match[2]], 2)


def _run(command: list[str], seconds: float, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, env=env, check=False)
    if result.returncode != 0:
        raise click.ClickException(f"{command[0]} failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def check_answers(url: str, routes: list[dict[str, Any]], folder: Path) -> int:
    """How many of the server's answers (one route per request, and all in one request) differ from cg-infer's."""
    path = folder / "routes.json"
    path.write_text(json.dumps(routes))
    infer = subprocess.run(
        [str(BIN / "cg-infer"), str(path), "--format", "json"], capture_output=True, text=True, timeout=600, check=False
    )
    expected = json.loads(infer.stdout)
    with httpx.Client(base_url=url, timeout=60) as client:
        many = client.post("/v1/grade", json=routes).json()
        one = [client.post("/v1/grade", json=route).json() for route in routes]
    return (
        sum(a != e for a, e in zip(many, expected))
        + sum(a != {**e, "index": 0} for a, e in zip(one, expected))
        + abs(len(expected) - len(routes))
    )


def bad(figures: dict[str, Any], allowed: set[int | str]) -> int:
    """Requests with a transport error or a status outside `allowed`."""
    return figures["transport_errors"] + sum(n for code, n in figures["statuses"].items() if code not in allowed)


@click.command()
@click.option("--duration", type=click.IntRange(min=1), default=20, show_default=True, help="Seconds per load.")
@click.option("--soak", type=click.IntRange(min=1), default=600, show_default=True, help="Seconds of the soak.")
@click.option("--rate", type=click.FloatRange(min=1), default=200, show_default=True, help="Open loop req/s.")
@click.option("--model", "model_path", default=None, help="cg-serve --model (default: the shipped model).")
@click.option("--serve-option", "serve_options", multiple=True, help="More cg-serve arguments (repeatable).")
@click.option("--json", "json_out", is_flag=True, help="Print the figures as JSON.")
def main(
    duration: int, soak: int, rate: float, model_path: str | None, serve_options: tuple[str, ...], json_out: bool
) -> None:
    """Run the load benchmark once and print its figures."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise click.ClickException(f"{', '.join(missing)} not found: {INSTALL} (Debian packages)")
    routes, source = load_routes(5000)
    command = [str(BIN / "cg-serve"), "--port", "0", *serve_options]
    if model_path is not None:
        command += ["--model", model_path]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("climbgrade kiosk on "):
        server.kill()
        raise click.ClickException(f"cg-serve did not start: {line!r}")
    url = line.split(" on ", 1)[1].strip()
    grade = url + "v1/grade"
    loads: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        one, hundred, script = folder / "one.json", folder / "hundred.json", folder / "post.lua"
        one.write_text(json.dumps(routes[0]))
        hundred.write_text(json.dumps([routes[i % len(routes)] for i in range(100)]))
        script.write_text(WRK_SCRIPT)
        try:
            httpx.get(url + "healthz", timeout=START_S).raise_for_status()
            unequal = check_answers(url, routes[:200], folder)
            hey(grade, one, min(duration, 5), 32)  # warm-up: every connection opened, every code path run
            rss = {"after_warm_up": rss_mib(server.pid)}
            for connections in (2, 8):  # hey's connections send in step: bursts of 2, then of 8
                loads[f"open {rate:g} req/s, {connections} conns"] = hey(grade, one, duration, connections, rate)
            loads["1 sequential client"] = hey(grade, one, duration, 1)
            loads["closed loop 32 conns"] = wrk(grade, one, duration, 32, script)
            loads["overload 256 conns"] = hey(grade, one, duration, 256)
            loads["100 routes, 8 conns"] = wrk(grade, hundred, duration, 8, script)
            rss["after_runs"] = rss_mib(server.pid)
            soak_samples = soak_rss(server.pid, grade, one, soak, rate)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=30)
    loads["100 routes, 8 conns"]["routes_per_s"] = round(loads["100 routes, 8 conns"]["requests_per_s"] * 100)
    report = {
        "command": " ".join(["bench/serve.py", *sys.argv[1:]]),
        "routes": source,
        "cpus": os.cpu_count(),
        "answers_unequal_to_cg_infer": unequal,
        "loads": loads,
        "server_rss_mib": {**rss, "soak": soak_samples},
        "exit_code_on_sigterm": code,
    }
    failures = unequal + sum(
        bad(figures, {200, 503, "2xx"} if name.startswith("overload") else {200, "2xx"})
        for name, figures in loads.items()
    )
    if json_out:
        click.echo(json.dumps(report, indent=1))
    else:
        print_table(report, url)
    if failures:  # after the figures, so a failing run still shows what failed
        raise click.ClickException(f"{failures} requests failed or answers differ from cg-infer's; there must be none")


def soak_rss(pid: int, url: str, body: Path, seconds: float, rate: float) -> list[tuple[float, float]]:
    """(seconds into the soak, RSS MiB) about every tenth of it, while `hey` sends `rate` req/s."""
    command = ["hey", "-z", f"{seconds}s", "-c", "8", "-q", f"{rate / 8:g}", "-m", "POST", "-T", "application/json"]
    load = subprocess.Popen([*command, "-D", str(body), url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    samples = []
    try:
        for step in range(1, 11):
            time.sleep(max(0.0, started + step * seconds / 10 - time.monotonic()))
            samples.append((round(time.monotonic() - started, 1), rss_mib(pid)))
    finally:
        load.wait(timeout=seconds + 60)
    return samples


def print_table(report: dict[str, Any], url: str) -> None:
    click.echo(f"cg-serve on {url}; routes: {report['routes']}; {report['cpus']} CPUs; {report['command']}")
    click.echo(f"{'load':<26} {'req/s':>9} {'routes/s':>9} {'p50 ms':>8} {'p99 ms':>8}  statuses, transport errors")
    for name, f in report["loads"].items():
        statuses = ", ".join(f"{code}: {n}" for code, n in f["statuses"].items())
        click.echo(
            f"{name:<26} {f['requests_per_s']:>9.0f} {f.get('routes_per_s', f['requests_per_s']):>9.0f} "
            f"{f['p50_ms']:>8} {f['p99_ms']:>8}  {statuses}; {f['transport_errors']}"
        )
    rss = report["server_rss_mib"]
    soak = ", ".join(f"{mib}" for _, mib in rss["soak"])
    click.echo(
        f"server RSS MiB: {rss['after_warm_up']} after warm-up, {rss['after_runs']} after the runs; soak: {soak}"
    )
    click.echo(
        f"answers unequal to cg-infer's: {report['answers_unequal_to_cg_infer']}; "
        f"exit {report['exit_code_on_sigterm']} on SIGTERM"
    )


if __name__ == "__main__":
    main()
