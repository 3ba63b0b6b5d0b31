"""The ProspectExperiment CustomResourceDefinition, generated from the spec and status models.

`python -m prospect.crd > crds/prospectexperiments.yaml` (or `prospect crd`) writes it; a test
regenerates it and compares, so the committed file never drifts from :mod:`prospect.spec`.

Pydantic's JSON Schema becomes a *structural* openAPIV3Schema: `$ref`s are inlined, titles
dropped, `anyOf [X, null]` becomes X with `nullable`, draft-2020 `exclusiveMinimum: n` becomes
OpenAPI's `minimum: n, exclusiveMinimum: true`, free-form objects preserve unknown fields, and
objects whose fields all have defaults default to `{}` so the API server fills them in. Field
descriptions are kept, so `kubectl explain prospectexperiment.spec` reads like the model.

What the schema cannot say, CEL rules (`x-kubernetes-validations`) say where they can: the two
competitors differ, each competitor names exactly one of a model and an endpoint, and so on.
Everything else is checked by the operator before it creates anything
(:func:`prospect.checks.check_cluster`).
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from prospect.controller import manifests
from prospect.controller.status import ExperimentStatus
from prospect.spec import GROUP, KIND, PLURAL, VERSION, ExperimentSpec, ProspectExperiment

__all__ = ["CRD_NAME", "build_crd", "openapi_schema", "to_yaml", "validation_schema"]

CRD_NAME = f"{PLURAL}.{GROUP}"
SHORT_NAME = "pex"

Schema = dict[str, Any]

# Keys of pydantic's JSON Schema that a structural schema has no use for.
_DROPPED = {"title", "$defs", "additionalProperties"}

_IDENTITY = (
    "(has(self.{r}.model) ? self.{r}.model : (has(self.{r}.endpoint) ? self.{r}.endpoint : ''))"
)
_SERVED_NAME = "(has(self.{r}.servedModelName) ? self.{r}.servedModelName : '')"

# CEL rules, by the path of the object they sit on.
_RULES: dict[tuple[str, ...], list[Schema]] = {
    ("spec", "competitors"): [
        {
            "rule": (
                f"{_IDENTITY.format(r='large')} != {_IDENTITY.format(r='small')} || "
                f"{_SERVED_NAME.format(r='large')} != {_SERVED_NAME.format(r='small')}"
            ),
            "message": "the two competitors must be two different models",
        },
        {
            "rule": (
                "!has(self.large.parameters) || !has(self.small.parameters) || "
                "self.large.parameters > self.small.parameters"
            ),
            "message": "large must declare strictly more parameters than small",
        },
    ],
    ("spec", "competitors", "large"): [
        {
            "rule": "has(self.model) != has(self.endpoint)",
            "message": "set exactly one of model (to launch) or endpoint (existing)",
        }
    ],
    ("spec", "competitors", "small"): [
        {
            "rule": "has(self.model) != has(self.endpoint)",
            "message": "set exactly one of model (to launch) or endpoint (existing)",
        }
    ],
    ("spec", "benchmark"): [
        {
            "rule": (
                "!(self.format in ['numeric', 'multiple-choice', 'short-answer']) || "
                "has(self.fields)"
            ),
            "message": "formats numeric, multiple-choice and short-answer need fields",
        },
        {
            "rule": (
                "self.format != 'multiple-choice' || (has(self.fields) && has(self.fields.choices))"
            ),
            "message": "format multiple-choice needs fields.choices",
        },
        {
            "rule": "(!has(self.split) && !has(self.subset)) || self.source.startsWith('hf://')",
            "message": "split and subset apply only to hf:// sources",
        },
    ],
    ("spec", "supervisor", "extractor"): [
        {
            "rule": "has(self.competitor) != has(self.endpoint)",
            "message": "set exactly one of competitor or endpoint for the extractor",
        }
    ],
    ("spec", "training"): [
        {
            "rule": (
                "(has(self.engine) ? self.engine : 'job') != 'job' || "
                "(has(self.nodes) ? self.nodes : 1) == 1"
            ),
            "message": "nodes > 1 needs engine pytorchjob or trainjob",
        }
    ],
}

_PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Large",
        "type": "number",
        "jsonPath": ".status.accuracy.large",
        "description": "Accuracy of the large competitor.",
    },
    {
        "name": "Small",
        "type": "number",
        "jsonPath": ".status.accuracy.small",
        "description": "Accuracy of the small competitor.",
    },
    {
        "name": "Incorrect",
        "type": "integer",
        "jsonPath": ".status.incorrect",
        "description": "Incorrect answers kept in the dataset.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]


def _inline(node: Any, defs: dict[str, Schema]) -> Any:
    """Resolve every `$ref`; the referring node's own keys (a field's description) win."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        own = {k: _inline(v, defs) for k, v in node.items() if k != "$ref"}
        return {**target, **own}
    return {k: _inline(v, defs) for k, v in node.items()}


def _structural(node: Schema) -> Schema:
    """One inlined pydantic node as a structural OpenAPI v3 node."""
    node = dict(node)
    nullable = False
    if "anyOf" in node:
        options = node.pop("anyOf")
        present = [o for o in options if o.get("type") != "null"]
        if len(present) != 1:
            raise ValueError(f"the CRD cannot express a union of {present}")
        nullable = len(present) < len(options)
        node = {**present[0], **node}
    if node.get("default", ...) is None:
        del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node[bound], bool):
            node[plain] = node[bound]
            node[bound] = True

    extra = node.get("additionalProperties")
    result = {k: v for k, v in node.items() if k not in _DROPPED}
    if nullable:
        result["nullable"] = True
    if result.get("type") == "array" and "items" in result:
        result["items"] = _structural(result["items"])
    if result.get("type") == "object":
        if "properties" in result:
            required = set(result.get("required", []))
            result["properties"] = {
                name: _with_object_default(_structural(prop), optional=name not in required)
                for name, prop in result["properties"].items()
            }
        elif isinstance(extra, dict) and extra.get("type"):
            result["additionalProperties"] = _structural(extra)
        else:
            result["x-kubernetes-preserve-unknown-fields"] = True
    first: Schema = {k: result.pop(k) for k in ("type", "description") if k in result}
    return {**first, **result}


def _with_object_default(node: Schema, *, optional: bool) -> Schema:
    """`default: {}` on an optional object whose fields all have defaults: the API server then
    stores every default, so `kubectl get -o yaml` shows what will run."""
    if (
        optional
        and node.get("type") == "object"
        and "properties" in node
        and "default" not in node
        and not node.get("nullable")
        and not node.get("required")
    ):
        node["default"] = {}
    return node


def _from_model(model: type[Any]) -> Schema:
    raw = model.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    return _structural(_inline(raw, defs))


def _add_rules(schema: Schema) -> None:
    for path, rules in _RULES.items():
        node = schema
        for part in path:
            node = node["properties"][part]
        node["x-kubernetes-validations"] = copy.deepcopy(rules)


def openapi_schema() -> Schema:
    """The whole resource's openAPIV3Schema."""
    spec = {
        "type": "object",
        "description": "What to run: the benchmark, the two competitors, and the stages.",
        **_from_model(ExperimentSpec),
    }
    status = _from_model(ExperimentStatus)
    status["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    status["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    schema: Schema = {
        "type": "object",
        "description": (ProspectExperiment.__doc__ or "").strip()
        + " Two competitors sit a benchmark, an objective supervisor grades them, and the "
        "target is trained on their incorrect answers.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    _add_rules(schema)
    return schema


def build_crd() -> Schema:
    """The CustomResourceDefinition, ready for `kubectl apply -f`."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "prospect",
                "app.kubernetes.io/part-of": "prospect",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT_NAME],
                "categories": ["prospect"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _PRINTER_COLUMNS,
                }
            ],
        },
    }


def _json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {k: _json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if result.pop("nullable", False):
        result["type"] = [result["type"], "null"]
        if "enum" in result:
            result["enum"] = [*result["enum"], None]
    if "properties" in node and isinstance(node["properties"], dict):
        result["properties"] = {k: _json_schema(v) for k, v in node["properties"].items()}
        result["additionalProperties"] = False
    return result


def validation_schema() -> Schema:
    """A draft-4 JSON Schema equivalent to the CRD's, for checking documents offline.

    Unknown fields are refused, as `kubectl apply --validate=strict` refuses them; CEL rules
    are not evaluated (the spec model's own validators say the same).
    """
    schema = _json_schema(openapi_schema())
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
    }
    return schema


def to_yaml(document: Schema) -> str:
    return manifests.to_yaml([document])


def main() -> None:
    sys.stdout.write(
        "# Generated from prospect.spec by `python -m prospect.crd`; do not edit by hand.\n"
    )
    sys.stdout.write(to_yaml(build_crd()))


if __name__ == "__main__":
    main()
