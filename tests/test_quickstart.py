"""The README's quick start stays true: the bundled config runs offline, and ships."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def copy_project_config(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path / "config.toml"


def test_readme_quick_start_commands_are_the_ones_we_run() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "digest send" in readme
    assert ".venv/bin/python -m pytest" in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -q -e '.[test]'" in ci and "python -m pytest" in ci


def test_bundled_config_sends_with_the_real_clock_then_sends_nothing(tmp_path: Path) -> None:
    copy_project_config(tmp_path)
    first = subprocess.run(
        [sys.executable, "-m", "digest", "send"], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert first.returncode == 0, first.stderr
    assert re.search(
        r"^5 feeds, 4\d new entries, \d+ stories, delivered to 3 of 3 subscribers \(Maildir .*outbox\)$",
        first.stdout.strip(),
    ), first.stdout
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == 3
    second = subprocess.run(
        [sys.executable, "-m", "digest", "send"], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode == 0, second.stderr
    assert "nothing new" in second.stdout
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == 3


def test_wheel_ships_the_templates(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("digest-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "digest/templates/digest.html.j2" in names
    assert "digest/templates/digest.txt.j2" in names
    assert any(n.startswith("digest/templates/partials/") for n in names)
    assert "digest/cli.py" in names


STAGES = {"fetch", "parse", "store", "select", "group", "render", "inline", "mail", "deliver"}


def test_stage_modules_import_no_other_stage() -> None:
    for stage in STAGES:
        tree = ast.parse((ROOT / "digest" / f"{stage}.py").read_text(encoding="utf-8"))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("digest."):
                imported.add((node.module or "").split(".")[1])
        helpers = {m for m in imported if m and m.startswith(f"{stage}_")}  # the stage's own parts (fetch_proxy)
        values = {"models", "settings", "errors"}  # settings: the config's values, split from models for start-up
        assert imported - helpers <= values, f"{stage} imports {imported - values}"


def test_every_command_has_help_and_is_in_the_readme() -> None:
    from click.testing import CliRunner

    from digest.cli import main

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, command in main.commands.items():
        assert command.help, name
        assert f"digest {name}" in readme, name
        assert CliRunner().invoke(main, [name, "--help"]).exit_code == 0


def test_python_dash_m_digest_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "digest", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "send" in result.stdout
