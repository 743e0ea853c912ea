"""The README's examples run as shown, so the README cannot drift from the code.

Fenced blocks are checked by their info string (the words after the opening ```):
- ``bash setup``: a set-up command; .ci/run runs it verbatim (checked here, run there);
- ``console``: each ``$ command`` runs with the venv's scripts, and the lines shown under it are its
  output: lines starting ``error:`` or ``warning:`` are what it writes to stderr, the others stdout,
  each compared line by line after whitespace normalisation; it must exit 2 when an error is shown,
  else 0;
- ``python``: runs in a fresh interpreter on the shipped model; a ``text`` block right after it is
  exactly what it prints;
- ``json``: routes, each graded by the shipped model without an error or a warning;
- ``bash training``: the training example, checked without training: its options exist, each step
  reads what the step before wrote, and it grades only routes of the boards its database holds;
- ``bash needs-db``: needs a user's database, so it is not run; its options exist.
- ``bash serve``: starts the kiosk server, which runs until stopped: not run here (the kiosk's API and
  browser tests start it); its options exist.
A block of any other kind fails, so a new example has to say how it is checked.
Also: the README's shipped-model row matches the sidecar's test metrics; docs/ and CHANGELOG.md links
reach their files and headings; docs/training.md names every cg-train and cg-export option and shows
the shipped model's recipe, which builds what its sidecar records; the docs' cg-* and bench/ commands use options that exist.
Console and python examples run in a scratch folder holding links to examples/ and exports/, so
files they write (pictures, say) stay out of the repository.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

from climbgrade_runtime import GradePredictor
from climbgrade_runtime.cli import eval_command
from climbgrade_runtime.cli import main as infer_command
from climbgrade_runtime.serve.cli import main as serve_command
from climbgrade_train.cli import export_command, train_command

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
COMMANDS: dict[str, click.Command] = {
    "cg-infer": infer_command,
    "cg-eval": eval_command,
    "cg-train": train_command,
    "cg-export": export_command,
    "cg-serve": serve_command,
}
KINDS = {"bash setup", "bash training", "bash needs-db", "bash serve", "console", "python", "text", "json"}
SHELL_OPERATORS = {"|", "||", "&&", ";"}
STDERR_PREFIXES = ("error:", "warning:")
MAX_README_LINES = 220


@dataclass(frozen=True)
class Block:
    """One fenced block of a markdown file: its info string, its text and where it starts."""

    kind: str
    text: str
    line: int


def fenced_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    kind: str | None = None
    body: list[str] = []
    start = 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("```"):
            if kind is None:
                kind, start, body = " ".join(line[3:].split()), number, []
            else:
                blocks.append(Block(kind, "\n".join(body) + "\n", start))
                kind = None
        elif kind is not None:
            body.append(line)
    assert kind is None, f"{path.name}: the block opened at line {start} is never closed"
    return blocks


BLOCKS = fenced_blocks(README)


def blocks_of(kind: str) -> list[Block]:
    return [block for block in BLOCKS if block.kind == kind]


def shell_lines(text: str) -> list[str]:
    """A bash block's command lines, with backslash continuations joined and comments dropped."""
    return [
        line for line in text.replace("\\\n", " ").splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def cg_commands(line: str) -> list[list[str]]:
    """The climbgrade commands (name first, then arguments) in one shell line, pipes and && included."""
    words = shlex.split(line, comments=True)
    commands: list[list[str]] = []
    current: list[str] = []
    for word in [*words, ";"]:
        if word in SHELL_OPERATORS:
            if current and Path(current[0]).name in COMMANDS:
                commands.append([Path(current[0]).name, *current[1:]])
            current = []
        else:
            current.append(word)
    return commands


@dataclass(frozen=True)
class ConsoleExample:
    """A `$ command` of a console block and the output lines shown under it."""

    command: str
    shown: tuple[str, ...]
    line: int

    def expected(self, stream: str) -> list[list[str]]:
        on_stderr = stream == "stderr"
        return [line.split() for line in self.shown if line.startswith(STDERR_PREFIXES) == on_stderr]


def console_examples() -> list[ConsoleExample]:
    examples = []
    for block in blocks_of("console"):
        lines = block.text.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
        assert starts and starts[0] == 0, f"README line {block.line}: a console block starts with a `$ ` command"
        for i, end in zip(starts, [*starts[1:], len(lines)]):
            shown = tuple(line for line in lines[i + 1 : end] if line.strip())
            examples.append(ConsoleExample(lines[i][2:], shown, block.line + 1 + i))
    return examples


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    """A working folder where the README's relative paths (examples/, exports/) resolve."""
    for name in ("examples", "exports"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def test_every_block_is_a_known_kind() -> None:
    unknown = [f"line {block.line}: ```{block.kind}" for block in BLOCKS if block.kind not in KINDS]
    assert not unknown, f"README blocks the test does not know how to check: {unknown}"


def test_readme_fits_on_a_few_screens() -> None:
    assert len(README.read_text().splitlines()) <= MAX_README_LINES


def test_setup_commands_are_the_ones_ci_runs() -> None:
    """Each set-up command appears verbatim in .ci/run, which only adds pip's -q (quiet) to it."""
    ci_lines = {re.sub(r" -q(?= )", "", line).strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()}
    commands = [line for block in blocks_of("bash setup") for line in shell_lines(block.text)]
    assert len(commands) == 2, f"the README shows two set-up commands, not {commands}"
    for command in commands:
        assert command in ci_lines, f".ci/run does not run the README's set-up command {command!r}"


def run_console(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A console command as a user types it, with the venv's scripts first on PATH."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("example", console_examples(), ids=lambda example: f"line{example.line}")
def test_console_example_prints_what_the_readme_shows(example: ConsoleExample, scratch: Path) -> None:
    result = run_console(example.command, scratch)
    shows_error = any(line.startswith("error:") for line in example.shown)
    assert result.returncode == (2 if shows_error else 0), f"{example.command}\n{result.stderr[-2000:]}"
    assert [line.split() for line in result.stdout.splitlines() if line.strip()] == example.expected("stdout")
    assert [line.split() for line in result.stderr.splitlines() if line.strip()] == example.expected("stderr")


def test_readme_picture_is_what_its_command_draws(tmp_path: Path) -> None:
    """The picture at the top is the shipped model's current answer, redrawn by the command its caption names."""
    text = README.read_text()
    picture = re.search(r"!\[[^]]*\]\((docs/pictures/[^)]+\.svg)\)", text)
    assert picture, "the README shows no picture from docs/pictures"
    command = re.search(r"`(cg-infer [^`]*--svg docs/pictures [^`]*)`", text)
    assert command, "the picture's caption does not name the command that draws it"
    redraw = command.group(1).replace("--svg docs/pictures", f"--svg {tmp_path}")
    run_console(redraw, ROOT)
    drawn = tmp_path / Path(picture.group(1)).name
    assert drawn.read_text() == (ROOT / picture.group(1)).read_text()


def python_examples() -> list[tuple[Block, Block | None]]:
    """Each python block with the text block right after it (its printed output), if there is one."""
    pairs = []
    for block in blocks_of("python"):
        after = BLOCKS[BLOCKS.index(block) + 1 :]
        pairs.append((block, after[0] if after and after[0].kind == "text" else None))
    return pairs


@pytest.mark.parametrize("code, output", python_examples(), ids=lambda value: f"line{value.line}" if value else "")
def test_python_example_prints_what_the_readme_shows(code: Block, output: Block | None, scratch: Path) -> None:
    result = subprocess.run([sys.executable, "-c", code.text], cwd=scratch, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    if output is not None:
        assert [line.split() for line in result.stdout.splitlines()] == [
            line.split() for line in output.text.splitlines()
        ]


def test_json_examples_are_routes_the_shipped_model_grades() -> None:
    predictor = GradePredictor.load()
    routes = []
    for block in blocks_of("json"):
        text, decoder, at = block.text, json.JSONDecoder(), 0
        while text[at:].strip():
            at += len(text[at:]) - len(text[at:].lstrip())
            route, at = decoder.raw_decode(text, at)
            routes.append(route)
    assert routes, "the README shows what a route looks like"
    for route in routes:
        assert predictor.predict(route).warnings == (), route


def shown_commands(blocks: list[Block] = BLOCKS) -> list[tuple[int, list[str]]]:
    """Every climbgrade command in these shell and console blocks, with its block's line."""
    found = []
    for block in blocks:
        if block.kind.startswith("console"):
            lines = [line[2:] for line in block.text.splitlines() if line.startswith("$ ")]
        elif block.kind.startswith("bash"):
            lines = shell_lines(block.text)
        else:
            continue
        found += [(block.line, command) for line in lines for command in cg_commands(line)]
    return found


def parse(name: str, args: list[str]) -> dict[str, Any]:
    """What click makes of a command's arguments, without running it: an unknown option or a bad value
    (a choice, a number, an angle spec) raises. Paths are left as given: the README's need not exist here."""
    command = COMMANDS[name]
    ctx = click.Context(command, info_name=name)
    params = {param.name: param for param in command.get_params(ctx)}
    given, extra, _ = command.make_parser(ctx).parse_args(args=list(args))
    assert not extra, f"{name}: unexpected arguments {extra}"
    for key, raw in given.items():
        if not isinstance(params[key].type, click.Path):
            params[key].process_value(ctx, raw)
    return given


def test_the_readme_shows_every_command() -> None:
    assert {command[0] for _, command in shown_commands()} == set(COMMANDS)


@pytest.mark.parametrize(
    "line, command", shown_commands(), ids=lambda value: str(value) if isinstance(value, int) else value[0]
)
def test_every_command_shown_parses(line: int, command: list[str]) -> None:
    """Every climbgrade command in the README uses options that exist, with values they accept."""
    name, *args = command
    try:
        parse(name, args)
    except click.ClickException as exc:
        pytest.fail(f"README block at line {line}: {shlex.join(command)}: {exc.format_message()}")


DOCS = sorted((ROOT / "docs").glob("*.md"))
DOCS_WITH_COMMANDS = [doc for doc in DOCS if shown_commands(fenced_blocks(doc))]


@pytest.mark.parametrize("doc", DOCS_WITH_COMMANDS, ids=lambda doc: doc.name)
def test_every_command_in_the_docs_parses(doc: Path) -> None:
    for line, command in shown_commands(fenced_blocks(doc)):
        name, *args = command
        try:
            parse(name, args)
        except click.ClickException as exc:
            pytest.fail(f"{doc.name} block at line {line}: {shlex.join(command)}: {exc.format_message()}")


def bench_commands() -> list[list[str]]:
    """The bench scripts' commands shown in the docs' shell blocks: script path first, then arguments."""
    found = []
    for doc in DOCS:
        for block in fenced_blocks(doc):
            if block.kind == "bash":
                words = [shlex.split(line, comments=True) for line in shell_lines(block.text)]
                found += [command[1:] for command in words if len(command) > 1 and command[1].startswith("bench/")]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("command", bench_commands(), ids=lambda command: command[0])
def test_bench_commands_in_the_docs_use_options_the_scripts_have(command: list[str]) -> None:
    script, *args = command
    result = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for option in (word for word in args if word.startswith("-")):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.stdout), f"{script} has no option {option}"


def training_example() -> dict[str, list[str]]:
    """The training block's steps by command name (boardlib's download under 'boardlib')."""
    (block,) = blocks_of("bash training")
    steps: dict[str, list[str]] = {}
    for line in shell_lines(block.text):
        words = shlex.split(line, comments=True)
        name = Path(words[0]).name
        if name in COMMANDS or name == "boardlib":
            assert name not in steps, f"the training example runs {name} twice"
            steps[name] = words[1:]
    assert set(steps) == {"boardlib", "cg-train", "cg-export", "cg-infer"}, steps
    return steps


def test_training_example_steps_read_what_the_step_before_wrote() -> None:
    steps = training_example()
    download = steps["boardlib"]
    assert download[0] == "database", download
    train, export, infer = (parse(name, steps[name]) for name in ("cg-train", "cg-export", "cg-infer"))
    assert list(train["databases"]) == [download[2]], "cg-train reads the database boardlib downloaded"
    assert Path(export["run_dir"]) == Path(train["out"]), "cg-export exports the run cg-train wrote"
    stem = export.get("name") or Path(export["run_dir"]).name
    assert Path(infer["model_path"]) == Path(export["out"]) / f"{stem}.onnx", "cg-infer loads the model cg-export wrote"


def test_training_example_grades_only_boards_its_model_knows() -> None:
    """A model trained on one board's database refuses other boards' routes, so the example grades only those."""
    steps = training_example()
    board = steps["boardlib"][1]
    routes = json.loads((ROOT / parse("cg-infer", steps["cg-infer"])["source"]).read_text())
    routes = routes if isinstance(routes, list) else [routes]
    assert routes and {route["board"] for route in routes} == {board}
    predictor = GradePredictor.load()
    assert all(predictor.predict(route).warnings == () for route in routes)


def anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives a markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", doc.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_relative_links_point_at_files_and_headings() -> None:
    for doc in [README, *DOCS, ROOT / "CHANGELOG.md"]:
        for target, anchor in re.findall(r"\]\(([^)#:]*)(?:#([^)]*))?\)", doc.read_text()):
            path = doc.parent / target if target else doc
            assert path.exists(), f"{doc.relative_to(ROOT)} links to missing {target}"
            assert not anchor or anchor in anchors(path), f"{doc.relative_to(ROOT)} links to missing {target}#{anchor}"


def test_training_doc_names_every_train_and_export_option() -> None:
    text = (ROOT / "docs" / "training.md").read_text()
    for name in ("cg-train", "cg-export"):
        for param in COMMANDS[name].params:
            if isinstance(param, click.Option):
                assert any(re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text) for opt in param.opts), (
                    f"docs/training.md does not describe {name} {param.opts[-1]}"
                )


def test_training_doc_describes_each_option_under_its_declared_group() -> None:
    """docs/training.md's option list follows the declarations: each option's bullet sits under the
    heading of its group, as cg-train --help lists it."""
    from climbgrade_runtime.options import GROUP_TITLES, declared
    from climbgrade_train.config import TrainConfig

    text = (ROOT / "docs" / "training.md").read_text()
    section = text[text.index("## `cg-train` options") : text.index("\n## Data")]
    heading = ""
    under: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("**") and not line.startswith("**Recipes"):
            heading = line.strip("*").split("**")[0].strip()
        lead = re.match(r"- ((?:`--[^`]+`(?:, | and | with )?)+)", line)  # the flags a bullet is about
        for flag in re.findall(r"`(--[a-z0-9-]+)", lead.group(1) if lead else ""):
            under.setdefault(flag, heading)
    for d in declared(TrainConfig):
        assert under.get(d.flag) == GROUP_TITLES[d.option.group], f"{d.flag} is not described under its group"


def test_training_doc_trains_the_shipped_model_with_what_its_sidecar_records(monkeypatch) -> None:
    """docs/training.md's command for the shipped model (its recipe file and databases) builds exactly
    the options the shipped sidecar records, as does the command line it recorded."""
    from climbgrade_train import cli
    from climbgrade_train.config import TrainConfig

    sidecar = json.loads((ROOT / "exports" / "climbgrade.onnx.json").read_text())["training"]
    blocks = [block for block in fenced_blocks(ROOT / "docs" / "training.md") if block.kind == "bash"]
    shown = [shlex.split(line, comments=True) for block in blocks for line in shell_lines(block.text)]
    (words,) = [w for w in shown if w[:3] == ["cg-train", "--config", "examples/recipes/climbgrade.toml"]]
    trained: list[TrainConfig] = []
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(cli, "train_run", lambda config, out: trained.append(config))
    train_command.main(words[1:], standalone_mode=False)
    train_command.main(shlex.split(sidecar["command"])[1:], standalone_mode=False)  # recorded before versions
    assert trained == [TrainConfig.from_dict(sidecar["config"])] * 2


def test_accuracy_table_matches_the_shipped_models_test_metrics() -> None:
    """The README's shipped row is what the sidecar records for the test split (MAE, within 1 and 2 V)."""
    metrics = json.loads((ROOT / "exports" / "climbgrade.onnx.json").read_text())["metrics"]["test"]
    (row,) = [line for line in README.read_text().splitlines() if line.startswith("| **shipped**")]
    cells = [cell.strip().strip("*") for cell in row.strip("|").split("|")][1:]
    expected = [
        f"{metrics['all']['mae']:.3f}",
        f"{100 * metrics['all']['within_1_vgrade']:.1f}%",
        f"{100 * metrics['all']['within_2_vgrades']:.1f}%",
        f"{metrics['kilter']['mae']:.3f}",
        f"{metrics['tension']['mae']:.3f}",
    ]
    assert cells == expected
