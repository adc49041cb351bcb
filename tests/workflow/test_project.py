"""project.yml: its workflows name real commands, and every repository file a command uses exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
REPOSITORY_DIRS = ("configs/", "scripts/", "spacy_bioselecttune/")


@pytest.fixture(scope="module")
def project() -> dict:
    weasel_util = pytest.importorskip("weasel.util")
    return weasel_util.load_project_config(ROOT)


def test_every_workflow_step_is_a_command(project):
    commands = {command["name"] for command in project["commands"]}
    steps = [step for workflow in project["workflows"].values() for step in workflow]
    assert steps and set(steps) <= commands
    assert project["workflows"]["strategies"] == ["convert", "strategy-grid"]


def test_every_repository_file_a_command_reads_or_runs_exists(project):
    missing = []
    for command in project["commands"]:
        named = list(command.get("deps", []))
        named += [word for line in command["script"] for word in re.split(r"\s+", line)]
        for path in named:
            if path.startswith(REPOSITORY_DIRS) and not path.endswith("/") and not (ROOT / path).exists():
                missing.append(f"{command['name']}: {path}")
    assert not missing
