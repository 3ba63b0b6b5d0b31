"""The least privilege the operator and its stage pods need, as data.

The Helm chart and the by-hand install manifests are checked against these rules, so the
operator asks for exactly what its code uses: nothing more.
"""

from __future__ import annotations

__all__ = ["OPERATOR_RULES", "STAGE_RULES"]

_READ = ["get", "list", "watch"]
_OWN = ["get", "list", "watch", "create", "patch", "delete"]

OPERATOR_RULES: list[dict[str, list[str]]] = [
    # The experiments themselves, their status, and kopf's finalizer/annotation bookkeeping.
    {
        "apiGroups": ["prospect.dev"],
        "resources": ["prospectexperiments"],
        "verbs": [*_READ, "patch", "update"],
    },
    {
        "apiGroups": ["prospect.dev"],
        "resources": ["prospectexperiments/status"],
        "verbs": ["get", "patch", "update"],
    },
    # kopf discovers the CRD and the namespaces it may watch.
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": _READ,
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": _READ},
    # What one experiment owns.
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": _OWN},
    {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": _OWN},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": _OWN},
    # Reading a failed stage's reason; secrets are never read, only referenced by name.
    {"apiGroups": [""], "resources": ["pods"], "verbs": _READ},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    # Multi-node training through an existing engine, when installed.
    {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"], "verbs": _OWN},
    {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": _OWN},
]

# Stage pods talk to S3 and to the competitor Services, never to the Kubernetes API.
STAGE_RULES: list[dict[str, list[str]]] = []
