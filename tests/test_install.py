"""The README's runtime install, as a user has it: a built wheel, not an editable install.

The trap this guards against: in the repository root, where the README says to work, the source
folder `climbgrade_runtime/` shadows the installed package, so the shipped model (package data
`climbgrade_runtime.exports`) must still be found.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, run_script

pytestmark = pytest.mark.slow  # a wheel build and fresh virtual environments

API_EXAMPLE = (
    "from climbgrade_runtime import GradePredictor\n"
    "p = GradePredictor.load().predict({'board': 'tension', 'layout_id': 11, 'angle': 40, "
    "'frames': 'p899r5p1171r6p1212r6p925r7'})\n"
    "print(p.difficulty)\n"
)


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with climbgrade installed from its wheel and nothing editable on its path.

    The venv borrows onnxruntime, numpy and click from this interpreter's site-packages through a
    .pth file; .pth files inside that folder (the editable install's finder) are not processed.
    """
    tmp = tmp_path_factory.mktemp("install")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp.glob("climbgrade-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = next(venv.glob("lib/python*/site-packages"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(purelib)
    (purelib / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv / "bin" / "python"


def test_wheel_ships_the_model(installed_python: Path) -> None:
    purelib = next(installed_python.parent.parent.glob("lib/python*/site-packages"))
    assert (purelib / "climbgrade_runtime" / "exports" / "climbgrade.onnx").is_file()
    assert (purelib / "climbgrade_runtime" / "exports" / "climbgrade.onnx.json").is_file()


def test_the_installed_package_exports_the_whole_kiosk_site(installed_python: Path, tmp_path: Path) -> None:
    """The wheel carries the page, grader.js and onnxruntime-web's files: an installed climbgrade (no
    source tree, no serve extra needed) writes the same site as the checkout."""
    code = (
        "import sys\nfrom climbgrade_runtime import GradePredictor\nfrom climbgrade_runtime.serve.site import export_site\n"
        "print('\\n'.join(export_site(GradePredictor.load().model_path, sys.argv[1])))\n"
    )
    result = subprocess.run(
        [str(installed_python), "-c", code, str(tmp_path / "site")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run_script("cg-serve", "--export-site", str(tmp_path / "checkout"))
    written = result.stdout.split()
    assert written == sorted(
        str(p.relative_to(tmp_path / "checkout")) for p in (tmp_path / "checkout").rglob("*") if p.is_file()
    )
    for name in written:
        assert (tmp_path / "site" / name).read_bytes() == (tmp_path / "checkout" / name).read_bytes(), name


@pytest.mark.parametrize("where", ["repository root", "elsewhere"])
def test_python_api_finds_the_shipped_model(installed_python: Path, tmp_path: Path, where: str) -> None:
    """`GradePredictor.load()` with no path works in the repository root and anywhere else."""
    cwd = ROOT if where == "repository root" else tmp_path
    result = subprocess.run(
        [str(installed_python), "-c", API_EXAMPLE], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = run_script(
        "cg-infer",
        "-",
        "--format",
        "json",
        stdin=json.dumps({"board": "tension", "layout_id": 11, "angle": 40, "frames": "p899r5p1171r6p1212r6p925r7"}),
    )
    assert float(result.stdout) == pytest.approx(json.loads(expected.stdout)["difficulty"], abs=1e-6)
