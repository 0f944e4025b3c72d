"""The README's quickstart runs: every console command and every Python block."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from n2nonnx.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_console_commands(tmp_path, monkeypatch):
    commands = [
        line[2:]
        for block in blocks("console")
        for line in block.splitlines()
        if line.startswith("$ ")
    ]
    assert len(commands) >= 4
    monkeypatch.chdir(tmp_path)
    for command in commands:
        words = shlex.split(command)
        if words[0] == "n2nonnx":
            assert main(words[1:]) == 0, command
        else:
            assert words[:2] == ["python", "-m"], command
            result = subprocess.run(
                [sys.executable, *words[1:]],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "PYTHONPATH": str(README.parent)},
            )
            assert result.returncode == 0, f"{command}\n{result.stderr}"


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_readme_python_blocks(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    exec(compile(blocks("python")[index], f"README.md python block {index}", "exec"), {})
