"""Names, labels and annotations of everything the operator creates for one experiment.

Names are derived, never stored: the same experiment always maps to the same object names, which
is what makes creation idempotent and lets a restarted operator find what it made before.
Labels follow the `app.kubernetes.io/*` conventions; the instance label is the experiment's name.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

from prospect import __version__
from prospect.spec import ProspectExperiment

__all__ = [
    "ANNOTATION_SPEC_DIGEST",
    "LABEL_COMPONENT",
    "LABEL_INSTANCE",
    "LABEL_MANAGED_BY",
    "MANAGED_BY",
    "Component",
    "labels",
    "metadata",
    "name_for",
    "selector",
    "selector_string",
]

MANAGED_BY = "prospect-operator"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"
ANNOTATION_SPEC_DIGEST = "prospect.dev/spec-digest"

# DNS-1123 labels (and Service names, which are DNS-1035 labels) stop at 63 characters.
_MAX_NAME = 63


class Component(StrEnum):
    """What one created object is for; its value is the `app.kubernetes.io/component` label."""

    CONFIG = "experiment"
    LARGE = "competitor-large"
    SMALL = "competitor-small"
    TARGET = "target-server"
    BASELINE = "baseline-server"
    GRADE = "grade"
    REPORT = "report"
    WRITE = "write"
    TRAIN = "train"
    EVALUATE = "evaluate"
    FINAL_REPORT = "final-report"

    @property
    def suffix(self) -> str:
        return self.value.removeprefix("competitor-").removesuffix("-server")


def name_for(experiment: str, component: Component) -> str:
    """`<experiment>-<suffix>`, shortened with a hash when too long.

    A Service name must start with a letter, and an experiment's name may start with a digit,
    so such names get a `pex-` prefix.
    """
    base = experiment if experiment[:1].isalpha() else f"pex-{experiment}"
    name = f"{base}-{component.suffix}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(experiment.encode()).hexdigest()[:8]
    keep = _MAX_NAME - len(component.suffix) - len(digest) - 2
    return f"{base[:keep].rstrip('-')}-{digest}-{component.suffix}"


def _label_value(value: str) -> str:
    if len(value) <= _MAX_NAME:
        return value
    return f"{value[:54].rstrip('-')}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def selector(experiment: str, component: Component) -> dict[str, str]:
    """The labels that pick one component's pods: stable, so a Deployment selector never changes."""
    return {
        LABEL_NAME: "prospect",
        LABEL_INSTANCE: _label_value(experiment),
        LABEL_COMPONENT: component.value,
    }


def labels(experiment: str, component: Component) -> dict[str, str]:
    return {
        **selector(experiment, component),
        LABEL_PART_OF: "prospect",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_VERSION: __version__,
    }


def selector_string(experiment: str) -> str:
    """A label selector for everything one experiment owns, as the API's query expects it."""
    return f"{LABEL_INSTANCE}={_label_value(experiment)},{LABEL_MANAGED_BY}={MANAGED_BY}"


def metadata(experiment: ProspectExperiment, component: Component) -> dict[str, Any]:
    """The metadata of one created object: name, labels, the digest of the spec it runs."""
    result: dict[str, Any] = {"name": name_for(experiment.name, component)}
    if experiment.metadata.namespace:
        result["namespace"] = experiment.metadata.namespace
    result["labels"] = labels(experiment.name, component)
    result["annotations"] = {ANNOTATION_SPEC_DIGEST: experiment.spec.digest()}
    return result
