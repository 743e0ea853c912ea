"""The vendored onnxruntime-web files are its npm release's, byte for byte, with its license.

`npm pack` fetches the pinned release from the npm registry (npm checks the tarball's integrity), and
each vendored file must equal the tarball's copy. With CI set, a machine without npm fails rather than skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from browser import unavailable

from climbgrade_runtime.serve.site import ORT_FILES, ORT_WEB_VERSION, STATIC

pytestmark = pytest.mark.slow  # npm pack

VENDORED = STATIC / "ort"
FROM_DIST = [name for name in ORT_FILES if name.endswith((".mjs", ".wasm"))]


def test_vendored_onnxruntime_web_is_the_npm_release(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed (apt-get install npm), so the vendored files cannot be checked")
    packed = subprocess.run(
        [npm, "pack", f"onnxruntime-web@{ORT_WEB_VERSION}", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert packed.returncode == 0, packed.stderr[-2000:]
    tarball = tmp_path / json.loads(packed.stdout)[0]["filename"]
    with tarfile.open(tarball) as archive:
        release = {name: archive.extractfile(f"package/dist/{name}").read() for name in FROM_DIST}  # type: ignore[union-attr]
        package = json.load(archive.extractfile("package/package.json"))  # type: ignore[arg-type]
    assert package["version"] == ORT_WEB_VERSION and package["license"] == "MIT"
    for name, content in release.items():
        assert (VENDORED / name).read_bytes() == content, (
            f"static/ort/{name} is not onnxruntime-web {ORT_WEB_VERSION}'s"
        )
    assert sorted(p.name for p in VENDORED.iterdir()) == sorted(ORT_FILES)  # nothing else rides along
    license_text = (VENDORED / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "Copyright (c) Microsoft Corporation" in license_text
    assert f"onnxruntime-web@{ORT_WEB_VERSION}" in (VENDORED / "README.md").read_text()
