"""The kiosk as a static site: the page, grader.js, the model and its sidecar, onnxruntime-web, a service
worker and a web-app manifest. cg-serve serves these files from memory and `cg-serve --export-site DIR`
writes them: one site, one code path, so the page a gym hosts anywhere is the page cg-serve shows.

The page grades on the device (grader.js on onnxruntime-web); the only thing it asks a server for beyond
these files is climb search, which needs cg-serve --db (`static/kiosk.json` says whether it is there).
Standard library only: exporting a site needs no serve extra.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ClimbgradeError
from ..files import atomic_write_bytes
from ..sidecar import sidecar_path

STATIC = Path(__file__).resolve().parent / "static"
# onnxruntime-web's minimal wasm build, vendored byte for byte from its npm release (static/ort/README.md).
ORT_WEB_VERSION = "1.30.0"
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm", "LICENSE", "README.md")
PAGE_FILES = ("app.js", "grader.js", "style.css", "icon.svg", "manifest.webmanifest")
ROOT_FILES = ("index.html", "sw.js")  # at the site's root: the service worker's scope is its own folder
SITE_PLACEHOLDER = '"__SITE__"'  # in sw.js: replaced by the version and file list of the site it caches
KIOSK_CONFIG = "static/kiosk.json"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".md": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE
}


@dataclass(frozen=True)
class SiteFile:
    content: bytes
    media_type: str


def site_files(model_path: Path, search: bool) -> dict[str, SiteFile]:
    """Every file of the kiosk by its path in the site, for the model at `model_path` (and its sidecar).

    `search`: whether the page may offer climb search (cg-serve --db). The service worker's cache is named
    by a hash of everything else, so a browser that has the site picks up a new model or page at once.
    """
    files = {name: (STATIC / name).read_bytes() for name in ("index.html", *PAGE_FILES)}
    files = {(name if name in ROOT_FILES else f"static/{name}"): data for name, data in files.items()}
    for name in ORT_FILES:
        files[f"static/ort/{name}"] = (STATIC / "ort" / name).read_bytes()
    model = f"model/{model_path.name}"
    files[f"static/{model}"] = model_path.read_bytes()
    files[f"static/{model}.json"] = sidecar_path(model_path).read_bytes()
    files[KIOSK_CONFIG] = (json.dumps({"model": model, "search": search}, indent=1) + "\n").encode()
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    cached = ["./", *sorted(name for name in files if name != "index.html")]
    site = json.dumps({"version": digest.hexdigest()[:16], "files": cached})
    worker = (STATIC / "sw.js").read_text(encoding="utf-8")
    if SITE_PLACEHOLDER not in worker:
        raise RuntimeError(f"{STATIC / 'sw.js'} has lost its {SITE_PLACEHOLDER} placeholder")
    files["sw.js"] = worker.replace(SITE_PLACEHOLDER, site).encode()
    return {name: SiteFile(data, MEDIA_TYPES[Path(name).suffix]) for name, data in sorted(files.items())}


def export_site(model_path: Path, folder: Path) -> list[str]:
    """Write the kiosk into `folder` (without climb search) for any static web server; the paths written.

    Refuses a folder that holds anything but an earlier export, so no other file is ever overwritten.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ClimbgradeError(f"--export-site {folder}: a file is in the way; give a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / KIOSK_CONFIG).is_file():
        raise ClimbgradeError(
            f"--export-site {folder}: the folder is not empty and holds no earlier kiosk; give a new or empty folder"
        )
    files = site_files(model_path, search=False)
    for name, file in files.items():
        atomic_write_bytes(folder / name, file.content)
    return list(files)
