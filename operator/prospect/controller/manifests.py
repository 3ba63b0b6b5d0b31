"""Every manifest the operator creates for one experiment, as pure functions of the experiment.

:func:`render` lists them all in the order the stages use them; `prospect render` prints that
list so a user can review it or apply it by hand. The controller creates the same manifests one
stage at a time and marks each as owned by the experiment (:func:`owned`), so deleting the
experiment deletes them all; data already written to the store stays.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml

from prospect.controller import naming, servers, workloads
from prospect.spec import ProspectExperiment, Role

__all__ = [
    "EXPERIMENT_KEY",
    "experiment_config_map",
    "experiment_document",
    "owned",
    "parse_experiment",
    "render",
    "to_yaml",
]

EXPERIMENT_KEY = "experiment.yaml"

Manifest = dict[str, Any]


def parse_experiment(body: Mapping[str, Any]) -> ProspectExperiment:
    """The experiment a resource describes, with only the metadata a stage may rely on.

    Raises:
        pydantic.ValidationError: the spec is invalid; the errors name the fields.
    """
    metadata = body.get("metadata") or {}
    return ProspectExperiment.model_validate(
        {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")},
            "spec": body.get("spec"),
        }
    )


def experiment_document(experiment: ProspectExperiment) -> str:
    """The experiment as YAML, every default spelled out: what the stage pods read."""
    document = experiment.model_dump(mode="json", by_alias=True, exclude_none=True)
    return yaml.safe_dump(document, sort_keys=False)


def experiment_config_map(experiment: ProspectExperiment) -> Manifest:
    """The spec the stages run, frozen: immutable, so no stage ever reads an edited spec."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": naming.metadata(experiment, naming.Component.CONFIG),
        "immutable": True,
        "data": {EXPERIMENT_KEY: experiment_document(experiment)},
    }


def served_roles(experiment: ProspectExperiment) -> list[Role]:
    """The competitors the operator launches; one given as an endpoint is already running."""
    return [role for role in Role if experiment.spec.competitors.by_role(role).model is not None]


def evaluates(experiment: ProspectExperiment) -> bool:
    spec = experiment.spec
    return (
        spec.training.enabled
        and spec.evaluation.enabled
        and (spec.evaluation.held_out_fraction > 0)
    )


def render(experiment: ProspectExperiment) -> list[Manifest]:
    """Every manifest the operator would create for this experiment, in stage order.

    Applied by hand, they must be applied one stage at a time (see docs/operator.md): a
    stage's Job expects the previous stage's output in the store. The manifests carry no
    ownerReferences, which need the live experiment's uid.
    """
    manifests = [experiment_config_map(experiment)]
    for role in served_roles(experiment):
        manifests.append(servers.competitor_deployment(experiment, role))
        manifests.append(servers.competitor_service(experiment, role))
    manifests += [
        workloads.grade_job(experiment),
        workloads.report_job(experiment),
        workloads.write_job(experiment),
    ]
    if experiment.spec.training.enabled:
        manifests.append(workloads.train_workload(experiment))
    if evaluates(experiment):
        if servers.has_baseline(experiment):
            manifests.append(servers.baseline_deployment(experiment))
            manifests.append(servers.baseline_service(experiment))
        manifests += [
            servers.target_deployment(experiment),
            servers.target_service(experiment),
            workloads.evaluate_job(experiment),
        ]
    manifests.append(workloads.final_report_job(experiment))
    return manifests


def owned(manifest: Manifest, owner: Mapping[str, Any]) -> Manifest:
    """A copy of `manifest` in the owner's namespace, controlled by the owner.

    `blockOwnerDeletion` lets a foreground deletion of the experiment wait for its children;
    the API server allows it because the operator may update `prospectexperiments/finalizers`.
    """
    result = copy.deepcopy(manifest)
    owner_meta = owner.get("metadata") or {}
    metadata = result.setdefault("metadata", {})
    metadata["namespace"] = owner_meta.get("namespace")
    metadata["ownerReferences"] = [
        {
            "apiVersion": owner.get("apiVersion"),
            "kind": owner.get("kind"),
            "name": owner_meta.get("name"),
            "uid": owner_meta.get("uid"),
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    return result


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so the experiment in the ConfigMap reads as YAML."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def to_yaml(documents: list[Manifest]) -> str:
    """Manifests as a YAML stream, as `prospect render` prints them."""
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
