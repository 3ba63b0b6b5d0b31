"""Reading an experiment file, with errors that name the file, the line and the field.

A pydantic error says which field is wrong; this module finds the line of that field in the
YAML, so `prospect validate` can say `examples/gsm8k.yaml:14: spec.competitors.large.model: ...`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from prospect.spec import ProspectExperiment

__all__ = [
    "ExperimentFile",
    "Problem",
    "SpecError",
    "load_experiment",
    "locate",
    "parse_experiment",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an experiment, located as precisely as we can."""

    where: str  # "spec.competitors.large.model"
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        place = (
            f"{self.file}:{self.line}: "
            if self.file and self.line
            else (f"{self.file}: " if self.file else "")
        )
        field = f"{self.where}: " if self.where else ""
        return f"{place}{field}{self.message}"


class SpecError(ValueError):
    """The experiment is not valid; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class ExperimentFile:
    experiment: ProspectExperiment
    path: Path
    text: str

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def _line_of(node: yaml.Node | None, path: tuple[Any, ...], *, key: bool = False) -> int | None:
    """The 1-based line of the deepest node along `path` that exists in the YAML; with `key`,
    the line of the last key itself rather than of its value (which may start below it)."""
    line = node.start_mark.line + 1 if node is not None else None
    for index, part in enumerate(path):
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None or (key and index == len(path) - 1):
                found = next((k for k, v in node.value if k.value == part), None)
                return found.start_mark.line + 1 if found is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def _duplicate_keys(node: yaml.Node | None, path: tuple[str, ...]) -> Iterator[tuple[str, int]]:
    """Keys that appear twice in one mapping, which a YAML loader resolves by keeping the last."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                yield ".".join((*path, name)), key.start_mark.line + 1
            seen.add(name)
            yield from _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            yield from _duplicate_keys(value, (*path, str(index)))


def _problems(exc: ValidationError, root: yaml.Node | None, file: str | None) -> list[Problem]:
    problems = []
    for error in exc.errors():
        location = tuple(error["loc"])
        where = ".".join(str(p) for p in location)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required but missing"
        elif error["type"] == "extra_forbidden":
            message = "is not a known field"
        elif error["type"] == "string_pattern_mismatch" and location[-1] == "name":
            message = (
                "must be a DNS-1123 label: lowercase letters, digits and '-', starting and "
                f"ending with a letter or digit (found {error['input']!r})"
            )
        elif "input" in error and error["type"] not in {"model_type"}:
            found = error["input"]
            if not isinstance(found, dict | list):
                message = f"{message} (found {found!r})"
        line = _line_of(root, location, key=error["type"] == "extra_forbidden")
        problems.append(Problem(where, message, file, line))
    return problems


def parse_experiment(text: str, *, file: str | None = None) -> ProspectExperiment:
    """Validate one experiment document.

    Raises:
        SpecError: the YAML does not parse, or the document does not fit the spec.
    """
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        detail = str(exc).replace('"<unicode string>"', f'"{file}"' if file else "the document")
        raise SpecError([Problem("", f"not valid YAML: {detail}", file, line)]) from None
    if not isinstance(data, dict):
        raise SpecError([Problem("", "expected a ProspectExperiment mapping", file, 1)])
    duplicates = list(_duplicate_keys(root, ()))
    if duplicates:
        raise SpecError(
            [
                Problem(where, "is given twice; YAML would silently keep the last", file, line)
                for where, line in duplicates
            ]
        )
    try:
        return ProspectExperiment.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_problems(exc, root, file)) from None


def locate(file: ExperimentFile, problems: list[Problem]) -> list[Problem]:
    """The same problems with the file and, where the field is in it, the line."""
    root = yaml.compose(file.text)
    return [
        Problem(
            p.where,
            p.message,
            str(file.path),
            p.line or _line_of(root, tuple(p.where.split(".")) if p.where else ()),
        )
        for p in problems
    ]


def load_experiment(path: Path) -> ExperimentFile:
    """Read and validate an experiment file.

    Raises:
        SpecError: the file is missing, unreadable or invalid.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([Problem("", f"cannot read: {exc.strerror}", str(path))]) from None
    experiment = parse_experiment(text, file=str(path))
    return ExperimentFile(experiment=experiment, path=path.resolve(), text=text)
