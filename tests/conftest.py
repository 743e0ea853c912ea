"""Shared fixtures: a synthetic database always, the real ../shared/data when present, and tiny
models trained and exported through the real console scripts (once per session).

Also the suite's tiers (markers registered in pyproject.toml): a test is `browser` when it uses the
browser fixture, `real_data` when it runs on ../shared/data (the real pipeline, a "real" parameter or
an explicit mark), and `slow` when it is either, uses a fixture that trains a model of its own
(TRAINING_FIXTURES), or is marked so (it trains, builds or runs for seconds). `pytest -m "not slow"` is the fast tier (docs/training.md, "Working on the code"). And the
hypothesis profiles: "ci" (deterministic, every example) under $CI, "dev" (a twentieth) otherwise;
$HYPOTHESIS_PROFILE chooses either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import BROWSER_ARGS, chromium_path, unavailable
from hypothesis import settings

from fakeboard import KILTER, TENSION, make_database

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def real_data_dir() -> Path | None:
    folder = Path(os.environ.get("CLIMBGRADE_DATA", ROOT.parent / "shared" / "data"))
    return folder if (folder / "kilter.db").is_file() and (folder / "tension.db").is_file() else None


REAL_DATA = real_data_dir()
TINY_MODEL = ["--d-model", "32", "--heads", "2", "--layers", "2", "--ff", "64"]
# The shipped model's features, so the pipelines cover every feature the tokenizer computes.
SHIPPED_FEATURES = [
    "--features",
    "x,y,is_hold,role_start,role_middle,role_finish,role_foot,angle,nearest,nearest2,move_dx,move_dy,route,shape",
]


settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(HYPOTHESIS_PROFILE)
EXAMPLE_SHARE = {"ci": 1.0, "dev": 0.05}[HYPOTHESIS_PROFILE]


def examples(count: int) -> int:
    """A fuzz test's examples under the loaded profile: `count` in CI, a twentieth (at least 10) locally."""
    return max(10, round(count * EXAMPLE_SHARE)) if EXAMPLE_SHARE < 1 else count


# Fixtures that train models of their own (beyond the fake pipeline every tier shares): their tests are slow.
TRAINING_FIXTURES = {"value_pipeline", "distilled"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tiers follow from what a test uses: the browser, the real data, a model trained for it."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        if fixtures & TRAINING_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if "browser" in fixtures:
            item.add_marker(pytest.mark.browser)
        if "real_pipeline" in fixtures or (callspec is not None and "real" in callspec.params.values()):
            item.add_marker(pytest.mark.real_data)
        if item.get_closest_marker("browser") or item.get_closest_marker("real_data"):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("real_data") and REAL_DATA is None:
        pytest.skip("../shared/data (or $CLIMBGRADE_DATA) is not present")


def run_script(name: str, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one of the project's console scripts as a user would."""
    result = subprocess.run([str(BIN / name), *args], input=stdin, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


# Each test's reports by phase ("setup", "call", "teardown"), so that a fixture's teardown can tell
# whether the test failed (the browser tests keep a screenshot of the page then).
PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


@dataclass(frozen=True)
class Pipeline:
    """A database set, the run cg-train made from it and the model cg-export wrote."""

    source: str
    databases: tuple[str, ...]
    run_dir: Path
    model: Path

    @property
    def sidecar(self) -> dict:
        return json.loads(Path(f"{self.model}.json").read_text())


@pytest.fixture(scope="session")
def fake_dbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("fakedata")
    return (
        str(make_database(folder / "kilter.db", KILTER, climbs=260, seed=1)),
        str(make_database(folder / "tension.db", TENSION, climbs=120, seed=2)),
    )


# The shipped model's head: bins, with its shrink and 80% interval calibrated on validation (so the
# pipelines' models output low and high, as the shipped one does).
SHIPPED_HEAD = ["--head", "bins", "--calibrate"]


def _pipeline(tmp: Path, source: str, databases: tuple[str, ...], epochs: str, *options: str) -> Pipeline:
    db_args = [arg for db in databases for arg in ("--db", db)]
    run_script("cg-train", *db_args, "--out", str(tmp / "run"), "--epochs", epochs, "--batch-size", "128", *options)
    out = run_script("cg-export", str(tmp / "run"), "--opset", "17", "--out", str(tmp / "exports"), "--name", "tiny")
    model = Path(out.stdout.strip().splitlines()[-1])
    return Pipeline(source, databases, tmp / "run", model)


@pytest.fixture(scope="session")
def fake_pipeline(tmp_path_factory: pytest.TempPathFactory, fake_dbs: tuple[str, str]) -> Pipeline:
    """The shipped configuration (every feature, a bins head, calibrated) on the synthetic boards."""
    options = (*TINY_MODEL, *SHIPPED_FEATURES, *SHIPPED_HEAD)
    return _pipeline(tmp_path_factory.mktemp("fake_pipeline"), "fake", fake_dbs, "3", *options)


@pytest.fixture(scope="session")
def real_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    assert REAL_DATA is not None  # real_data tests are skipped without it
    dbs = (str(REAL_DATA / "kilter.db"), str(REAL_DATA / "tension.db"))
    options = (*TINY_MODEL, *SHIPPED_FEATURES, *SHIPPED_HEAD)
    return _pipeline(tmp_path_factory.mktemp("real_pipeline"), "real", dbs, "1", *options)


@pytest.fixture(scope="session")
def value_pipeline(tmp_path_factory: pytest.TempPathFactory, fake_dbs: tuple[str, str]) -> Pipeline:
    """A value-head model (no interval: outputs difficulty and problems only) on the synthetic boards."""
    options = ("--d-model", "16", "--heads", "2", "--layers", "1", "--ff", "32")
    return _pipeline(tmp_path_factory.mktemp("value_pipeline"), "value", fake_dbs, "1", *options)


@pytest.fixture(scope="session", params=["fake", "real"])
def pipeline(request: pytest.FixtureRequest) -> Pipeline:
    """Each test using this runs on the synthetic database and, when present, on the real data."""
    return request.getfixturevalue(f"{request.param}_pipeline")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, launched once per test module that asks for it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[test]')")
    executable = chromium_path()
    if executable is None:
        unavailable("no Chromium at /usr/bin/chromium or on PATH (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        yield launched
        launched.close()
