"""The spec reference in docs/, written from the spec model so it cannot drift from it.

python -m prospect.reference > docs/spec-reference.md
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from prospect.spec import ExperimentSpec

__all__ = ["render_reference"]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" (optional)" if type(None) in args else "")
    if origin is typing.Literal:
        return ", ".join(f"`{a}`" for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "map"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ", ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if isinstance(value, BaseModel) else f"`{value!r}`"
    value = field.default
    if isinstance(value, enum.Enum):
        value = value.value
    return "" if value is None else f"`{value}`"


def _nested(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _section(model: type[BaseModel], path: str, out: list[str]) -> None:
    out += [f"## `{path}`", ""]
    doc = (model.__doc__ or "").strip()
    if doc:
        out += [" ".join(doc.split()), ""]
    out += ["| field | type | default | description |", "|---|---|---|---|"]
    children = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        nested = _nested(field.annotation)
        description = " ".join((field.description or "").split())
        if not description and nested is not None:
            description = " ".join((nested.__doc__ or "").split()).split(". ")[0]
        out.append(
            f"| `{alias}` | {_type_name(field.annotation)} | {_default(field)} | {description} |"
        )
        if nested is not None:
            children.append((nested, f"{path}.{alias}"))
    out.append("")
    for nested, child_path in children:
        _section(nested, child_path, out)


def render_reference() -> str:
    out = [
        "# ProspectExperiment spec reference",
        "",
        "Generated from the spec model (`operator/prospect/spec.py`) by "
        "`python -m prospect.reference`; a test fails when this file drifts from it.",
        "",
    ]
    _section(ExperimentSpec, "spec", out)
    return "\n".join(out)


if __name__ == "__main__":
    print(render_reference(), end="")
