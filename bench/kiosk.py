"""The kiosk on the device, in Debian's Chromium: how long a tap takes to show its grade, and the first load.

    .venv/bin/python bench/kiosk.py                  # 200 taps on real routes, the shipped model
    .venv/bin/python bench/kiosk.py --model exports/climbgrade.int8.onnx

Exports the site (`cg-serve --export-site`), serves it with Python's http.server on loopback and opens
it in headless Chromium (Playwright). First load: a fresh browser profile, from navigation to the page
ready to grade (the model compiled, the board drawn, the offline copy complete), and what the server
sent for it (the page's files, and the service worker's copy of the site); then a reload, which the
service worker answers. Taps: for each real route ($CLIMBGRADE_DATA or ../shared/data; else the
examples) the route less one hold is loaded, then that hold is tapped; the time runs from the tap's
pointer events to the frame after the grade, sweep chart and hold effects are all on screen. Beside it,
`grader.insight` alone (the one model run a tap makes) on the same routes. Nothing here is a timed test.
"""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

import click
import numpy as np
from sample_routes import load_routes

BIN = Path(sys.executable).parent
BROWSER_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
HOLD = re.compile(r"p(\d+)r(\d+)")

# In the page: tap the hole, then wait for <body data-state=idle> and the next frame drawn after it.
TAP = """async (pid) => {
  const hit = document.querySelector(`#board .hits [data-placement-id="${pid}"]`);
  const start = performance.now();
  const idle = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (document.body.dataset.state === "idle") { observer.disconnect(); resolve(); }
    });
    observer.observe(document.body, {attributes: true, attributeFilter: ["data-state"]});
  });
  for (const type of ["pointerdown", "pointerup"]) hit.dispatchEvent(new PointerEvent(type, {bubbles: true}));
  await idle;
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  return performance.now() - start;
}"""
# In the page: grader.insight alone on each route, as a tap runs it.
INSIGHT = """async ({routes, model}) => {
  const {loadGrader} = await import(new URL("static/grader.js", location.href).href);
  const grader = await loadGrader({model: new URL(`static/${model}`, location.href).href});
  const times = [];
  for (const route of routes) {
    const start = performance.now();
    const answer = await grader.insight(route, {angles: "all", explain: true, mirror: true});
    times.push(performance.now() - start);
    if (answer.error) throw new Error(answer.error);
  }
  return times;
}"""
LOADED = """() => {
  const entries = [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")];
  return {ms: performance.now(), page_bytes: entries.reduce((sum, e) => sum + e.decodedBodySize, 0), page_files: entries.length};
}"""


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """python -m http.server's handler, quiet, counting the files and bytes it sends (the network's share)."""

    sent: ClassVar[dict[str, int]] = {"files": 0, "bytes": 0}

    def copyfile(self, source: Any, outputfile: Any) -> None:
        start = source.tell()
        super().copyfile(source, outputfile)
        CountingHandler.sent["files"] += 1
        CountingHandler.sent["bytes"] += source.tell() - start

    def log_message(self, format: str, *args: object) -> None:  # no line per file served
        pass

    @classmethod
    def take(cls) -> dict[str, int]:
        """What was sent since the last take."""
        sent, cls.sent = cls.sent, {"files": 0, "bytes": 0}
        return sent


def percentiles(values: list[float]) -> str:
    p50, p95 = np.percentile(values, [50, 95])
    return f"{p50:.1f} | {p95:.1f} | {max(values):.1f}"


@click.command()
@click.option("--model", "model_path", default=None, help="Model to export the site with (default: the shipped one).")
@click.option("--taps", type=click.IntRange(min=1), default=200, show_default=True, help="Real routes, one tap each.")
def main(model_path: str | None, taps: int) -> None:
    from playwright.sync_api import sync_playwright

    routes, source = load_routes(taps * 2)
    routes = [r for r in routes if len(HOLD.findall(r["frames"])) >= 2][:taps]
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        model = ["--model", model_path] if model_path else []
        subprocess.run([str(BIN / "cg-serve"), "--export-site", str(site), *model], check=True, capture_output=True)
        model_file = next((site / "static" / "model").glob("*.onnx")).name
        handler = functools.partial(CountingHandler, directory=str(site))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # python -m http.server, in a thread
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
                context = browser.new_context(viewport={"width": 1000, "height": 800})
                page = context.new_page()
                page.set_default_timeout(60_000)
                page.goto(url)
                page.wait_for_selector("body[data-state=idle]")
                first = {**page.evaluate(LOADED), **CountingHandler.take()}
                page.reload()
                page.wait_for_selector("body[data-state=idle]")
                again = {**page.evaluate(LOADED), **CountingHandler.take()}
                tap_ms = [tap(page, route) for route in routes]
                insight_ms = page.evaluate(INSIGHT, {"routes": routes, "model": f"model/{model_file}"})
                browser.close()
        finally:
            server.shutdown()
    print(f"kiosk in Chromium ({model_file}; {len(routes)} taps on {source})\n")
    print("| what | p50 ms | p95 ms | max ms |\n|---|---|---|---|")
    print(f"| a tap: grade, sweep and effects on screen | {percentiles(tap_ms)} |")
    print(f"| grader.insight alone (the tap's one model run) | {percentiles(insight_ms)} |")
    print("\n| load | ready after ms | the page's files | their bytes | files the server sent | bytes it sent |")
    print("|---|---|---|---|---|---|")
    for name, load in (("first visit (empty cache)", first), ("reload (offline copy)", again)):
        cells = (
            f"{load['ms']:.0f}",
            load["page_files"],
            f"{load['page_bytes']:,}",
            load["files"],
            f"{load['bytes']:,}",
        )
        print(f"| {name} | {' | '.join(map(str, cells))} |")


def tap(page: Any, route: dict[str, Any]) -> float:
    """Loads `route` less its last hold on its board and angle, then taps that hold: the tap's milliseconds."""
    holds = HOLD.findall(route["frames"])
    page.select_option("#layout", f"{route['board']}/{route['layout_id']}")
    page.select_option("#angle", str(route["angle"]))
    page.fill("#paste", "".join(f"p{p}r{r}" for p, r in holds[:-1]))
    page.click("#load")
    page.wait_for_selector("body[data-state=idle]")
    return float(page.evaluate(TAP, int(holds[-1][0])))


if __name__ == "__main__":
    main()
