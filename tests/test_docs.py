"""The documentation stays true: every `jal-*` command in README.md and docs/ parses with its CLI, every repository
path it names exists, its results tables agree with the files the benchmarks wrote, and its cheap examples run."""
from __future__ import annotations

import glob
import importlib
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from jal_deploy.cli import extras
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]                    # where commands are parsed
PROSE = [*PAGES, ROOT / "models" / "README.md"]         # where paths and numbers are checked


def project_scripts() -> dict[str, str]:
    """[project.scripts] of pyproject.toml (read by hand: tomllib is Python 3.11+, the package supports 3.10)."""
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", (ROOT / "pyproject.toml").read_text(), re.M | re.S)
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', section.group(1), re.M))


SCRIPTS = project_scripts()
SHELL_FENCES = {"", "bash", "sh", "shell", "console", "zsh"}  # fences whose lines are commands
OPERATORS = {"&&", "||", ";", "|", "&"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass
class Block:
    path: Path
    line: int          # 1-based line of the block's first content line
    lang: str
    text: str


def fenced_blocks(path: Path) -> list[Block]:
    """Fenced code blocks (``` or ~~~, indented or not) with their info string."""
    blocks, lines, i = [], path.read_text().split("\n"), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        body, start, i = [], i + 2, i + 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        blocks.append(Block(path, start, lang.lower(), "\n".join(body)))
        i += 1
    return blocks


@dataclass
class Command:
    where: str         # file:line, for the failure message
    text: str          # the command as written (continuations joined)
    argv: list[str]    # jal-* program first


def shell_commands(block: Block) -> list[Command]:
    """The `jal-*` commands of a shell block: continuation lines joined, comments dropped, split at && ; | etc.,
    leading `VAR=value` assignments skipped, `...` (the docs' "more options") dropped."""
    out, lines, i = [], block.text.split("\n"), 0
    while i < len(lines):
        first, text = i, lines[i]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        text = text.strip()
        if block.lang == "console":
            if not text.startswith("$ "):
                continue
            text = text[2:]
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError as e:
            raise AssertionError(f"{rel(block.path)}:{block.line + first}: cannot split `{text}` into words: {e}")
        segment: list[str] = []
        for token in tokens + [";"]:
            if token not in OPERATORS:
                segment.append(token)
                continue
            while segment and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", segment[0]):  # VAR=value cmd
                segment.pop(0)
            if segment and segment[0] in SCRIPTS:
                out.append(Command(f"{rel(block.path)}:{block.line + first}", text,
                                   [t for t in segment if t != "..."]))
            segment = []
    return out


def all_commands() -> list[Command]:
    return [c for page in PAGES for b in fenced_blocks(page) if b.lang in SHELL_FENCES for c in shell_commands(b)]


def load_cli(program: str) -> click.Command:
    """The Click object behind a console script (the entry points are shims that name a missing extra)."""
    module, _, attr = extras.COMMANDS[program][0].partition(":")
    return getattr(importlib.import_module(module), attr)


def parse(cli: click.Command, program: str, args: list[str]) -> None:
    """Parse `args` with Click as the CLI would (options, choices, arity, required values, subcommands) without
    running anything. Paths are not checked for existence: the docs name the user's files."""
    try:
        ctx = cli.make_context(program, list(args))
        while isinstance(ctx.command, click.Group):
            rest = [*(getattr(ctx, "_protected_args", None) or []), *ctx.args]
            if not rest:
                break
            name, sub, sub_args = ctx.command.resolve_command(ctx, rest)
            ctx = sub.make_context(name, sub_args, parent=ctx)
    except click.exceptions.Exit:  # --help, --version
        pass


@pytest.fixture
def lenient_paths(monkeypatch):
    monkeypatch.setattr(click.Path, "convert", lambda self, value, param, ctx: value)


COMMANDS = all_commands()


def test_the_docs_have_commands_to_check():
    programs = {c.argv[0] for c in COMMANDS}
    assert {"jal-train", "jal-export", "jal-segment", "jal-data"} <= programs, programs


@pytest.mark.parametrize("program", sorted(SCRIPTS))
def test_every_jal_command_in_the_docs_parses_with_its_cli(program, lenient_paths):
    cli = load_cli(program)
    failures = []
    for command in (c for c in COMMANDS if c.argv[0] == program):
        try:
            parse(cli, program, command.argv[1:])
        except click.ClickException as e:
            failures.append(f"{command.where}: `{command.text}`\n    -> {type(e).__name__}: {e.format_message()}")
    assert not failures, f"{len(failures)} documented {program} command(s) no longer parse:\n" + "\n".join(failures)


def test_the_command_parser_catches_a_renamed_option(lenient_paths):
    with pytest.raises(click.NoSuchOption):
        parse(load_cli("jal-segment"), "jal-segment", ["clip.mp4", "-m", "m.onnx", "--no-such-option"])
    with pytest.raises(click.UsageError):
        parse(load_cli("jal-train"), "jal-train", ["no-such-subcommand", "x"])
    block = Block(ROOT / "README.md", 1, "bash", "A=1 jal-data check /d \\\n  --format gta5 ... # comment && x\n"
                                                   "cd x && jal-demo --help")
    assert [c.argv for c in shell_commands(block)] == [["jal-data", "check", "/d", "--format", "gta5"],
                                                       ["jal-demo", "--help"]]


# ---------------------------------------------------------------------------------------------------------------
# Paths named in the docs exist.

TRACKED_TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".") or p.name == ".ci"} - {
    "runs", "site", "build", "dist", "data"}
OUTPUT_NAMES = {"runs", "site", "exported", "pl"}  # folders that commands create


def inline_code(path: Path) -> list[tuple[int, str]]:
    """Inline `code` spans outside fenced blocks, with their line numbers."""
    spans, fenced = [], False
    for n, line in enumerate(path.read_text().split("\n"), 1):
        if re.match(r"^\s*(`{3,}|~{3,})", line):
            fenced = not fenced
            continue
        if not fenced:
            spans += [(n, s) for s in re.findall(r"`([^`\n]+)`", line)]
    return spans


def repository_path(token: str) -> str | None:
    """The repository path a code span names, or None when it names something else (an option, a class...)."""
    token = token.strip().rstrip(".,:;)")
    if " " in token or token.startswith(("-", "http", "/", "~", "$")) or "=" in token:
        return None
    head = token.split("/")[0]
    if "/" in token and head in TRACKED_TOP and head not in OUTPUT_NAMES:
        return token
    if "/" not in token and head in TRACKED_TOP:
        return token
    if "/" not in token and re.fullmatch(r"[\w.-]+\.(py|sh)", token):
        return token  # a script named without its folder: must exist at the root, else it needs its folder
    return None


def test_every_repository_path_in_backticks_exists():
    missing = []
    for page in PROSE:
        for line, span in inline_code(page):
            path = repository_path(span)
            if path is None:
                continue
            candidates = [ROOT / path, page.parent / path]
            if any(c in path for c in "*?[{"):
                pattern = re.sub(r"\{[^}]*\}", "*", path)
                found = glob.glob(str(ROOT / pattern)) or glob.glob(str(page.parent / pattern))
            else:
                found = [c for c in candidates if c.exists()]
            if not found:
                missing.append(f"{rel(page)}:{line}: `{span}` is not a file or folder of the repository")
    assert not missing, "\n".join(missing)


def test_markdown_links_outside_docs_point_at_files_that_exist():
    """mkdocs --strict checks the links inside docs/; README.md and the model card are read on their own."""
    missing = []
    for page in [ROOT / "README.md", ROOT / "models" / "README.md"]:
        for n, line in enumerate(page.read_text().split("\n"), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if target.startswith(("http://", "https://", "#", "mailto:")):
                    continue
                if not (page.parent / target.split("#")[0]).exists():
                    missing.append(f"{rel(page)}:{n}: link to {target}, which does not exist")
    assert not missing, "\n".join(missing)


def test_the_docs_name_no_file_outside_the_repository():
    texts = {rel(p): p.read_text() for p in PROSE + sorted((ROOT / "training" / "presets").glob("*.yaml"))}
    offenders = [f"{name}: names `{word}`" for name, text in texts.items()
                 for word in ("shared/docs", "/work/", "PLAN.txt", "bench/STUDIES.md") if word in text]
    assert not offenders, "\n".join(offenders)


def test_the_docs_picture_is_the_shipped_one():
    assert (ROOT / "docs" / "assets" / "demo-grid.png").read_bytes() == (ROOT / "models" / "demo-grid.png").read_bytes()


def test_readme_and_model_card_stay_short():
    assert len((ROOT / "README.md").read_text().split("\n")) <= 300
    assert len((ROOT / "models" / "README.md").read_text().split("\n")) <= 150


def test_the_readme_test_command_is_what_ci_runs():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().split("\n")
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    readme = [b.text.strip() for b in fenced_blocks(ROOT / "README.md") if "pytest" in b.text]
    assert readme == [" && ".join(ci)], f"README's test command {readme} differs from .ci/run {ci}"
    install = [b.text.strip() for b in fenced_blocks(ROOT / "docs" / "install.md") if "pytest" in b.text]
    assert install == readme


# ---------------------------------------------------------------------------------------------------------------
# The cheap examples run as written.

def readme_block(after: str, lang: str) -> Block:
    text = (ROOT / "README.md").read_text()
    start = text.index(after)
    return next(b for b in fenced_blocks(ROOT / "README.md") if b.lang == lang and
                text.index(b.text) > start)


@pytest.fixture(scope="module")
def street_clip(tmp_path_factory):
    from click.testing import CliRunner

    from jal_deploy.cli.data import main as jal_data
    clip = tmp_path_factory.mktemp("clip") / "street.mp4"
    result = CliRunner().invoke(jal_data, ["synth-video", str(clip), "--frames", "6", "--size", "256x128"])
    assert result.exit_code == 0, result.output
    return clip


def test_readme_segmenter_example_runs_as_written(street_clip):
    block = readme_block("From Python", "python")
    assert "street.mp4" in block.text and len(block.text.split("\n")) <= 12
    work = street_clip.parent
    (work / "models").unlink(missing_ok=True)
    (work / "models").symlink_to(ROOT / "models")
    run = subprocess.run([sys.executable, "-c", block.text], cwd=work, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"})
    assert run.returncode == 0, f"README.md:{block.line}: the Python example failed:\n{run.stderr[-3000:]}"
    assert sum(line.endswith(" car") for line in run.stdout.split("\n")) == 6, run.stdout


def test_readme_segment_command_runs_on_the_shipped_model(street_clip, tmp_path):
    from click.testing import CliRunner

    from jal_deploy.cli.segment import main as jal_segment
    command = next(c for c in COMMANDS if c.where.startswith("README.md") and c.argv[0] == "jal-segment")
    args = [str(street_clip) if a == "drive.mp4" else str(ROOT / a) if a.startswith("models/") else a
            for a in command.argv[1:]]
    result = CliRunner().invoke(jal_segment, [*args, "--limit", "2", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, f"{command.where}: `{command.text}` failed:\n{result.output}"
    assert (tmp_path / "street.mp4").exists(), sorted(p.name for p in tmp_path.iterdir())


def test_readme_int8_export_runs_on_a_tiny_checkpoint(runtime_models, synth_root, tmp_path):
    from click.testing import CliRunner

    from export.cli import main as jal_export
    command = next(c for c in COMMANDS if c.where.startswith("README.md") and c.argv[0] == "jal-export"
                   and "--int8" in c.argv)
    cityscapes = str(synth_root / "cityscapes")
    args = [str(runtime_models["checkpoint"]) if a.endswith(".pth") else str(tmp_path) if a == "exported/"
            else cityscapes if a.startswith("/data/") else a for a in command.argv[1:]]
    result = CliRunner().invoke(jal_export, [*args, "--calib-count", "2", "--val-limit", "2"])
    assert result.exit_code == 0, f"{command.where}: `{command.text}` failed:\n{result.output}"
    assert list(tmp_path.glob("*.int8.onnx")) and (tmp_path / "parity.json").exists()
