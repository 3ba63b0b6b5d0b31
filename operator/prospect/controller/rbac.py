"""The least privilege the operator and its stage pods need, as data.

The Helm chart and the by-hand install manifests are checked against these rules, so the
operator asks for exactly what its code uses: nothing more.
"""

from __future__ import annotations

__all__ = ["OPERATOR_RULES", "STAGE_RULES"]

_OBSERVE = ["list", "watch"]

OPERATOR_RULES: list[dict[str, list[str]]] = [
    # The experiments: kopf lists and watches them, and patches in its finalizer and annotations.
    {
        "apiGroups": ["prospect.dev"],
        "resources": ["prospectexperiments"],
        "verbs": ["list", "watch", "patch"],
    },
    # The status, which only the controller writes.
    {
        "apiGroups": ["prospect.dev"],
        "resources": ["prospectexperiments/status"],
        "verbs": ["patch"],
    },
    # What the operator creates carries blockOwnerDeletion, which needs this on the owner.
    {
        "apiGroups": ["prospect.dev"],
        "resources": ["prospectexperiments/finalizers"],
        "verbs": ["update"],
    },
    # kopf notices CRDs and namespaces that appear (for --namespace patterns).
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": _OBSERVE,
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": _OBSERVE},
    # What one experiment owns: created, then found again by label; Deployments are scaled.
    # Nothing is deleted by hand: ownerReferences hand that to the garbage collector.
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "create"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "create", "patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "create"]},
    # Stage results and failure reasons come from the pods' termination messages.
    # Secrets are never read, only named in secretKeyRefs.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # Multi-node training through an existing engine, when installed.
    {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"], "verbs": ["list", "create"]},
    {
        "apiGroups": ["trainer.kubeflow.org"],
        "resources": ["trainjobs"],
        "verbs": ["list", "create"],
    },
]

# Stage pods talk to S3 and to the competitor Services, never to the Kubernetes API.
STAGE_RULES: list[dict[str, list[str]]] = []
