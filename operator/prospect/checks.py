"""Semantic checks that need more than the document: files, model sizes, sources.

The spec model refuses what the document alone shows to be wrong. These checks read the
models' own files to refuse competitors of equal size (no ties, a clear signal) and look for
the benchmark and the training target before any work starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prospect import models
from prospect.benchmarks import BenchmarkError, load_benchmark
from prospect.documents import Problem
from prospect.spec import ProspectExperiment, Role

__all__ = ["check_cluster", "check_local", "competitor_sizes"]

log = logging.getLogger("prospect")


def competitor_sizes(
    experiment: ProspectExperiment, *, base_dir: Path
) -> tuple[dict[Role, int | None], list[Problem]]:
    """Each competitor's parameter count, read from its files or else as declared."""
    sizes: dict[Role, int | None] = {}
    problems: list[Problem] = []
    for role in Role:
        competitor = experiment.spec.competitors.by_role(role)
        where = f"spec.competitors.{role.value}"
        counted = None
        if competitor.model is not None:
            try:
                counted = models.parameter_count(competitor.model, base_dir=base_dir)
            except models.ModelError as exc:
                problems.append(Problem(f"{where}.model", str(exc)))
                sizes[role] = None
                continue
            if counted is None and not competitor.model.startswith(("hf://", "s3://")):
                # A local file or package that cannot be read is missing, whatever is declared.
                problems.append(
                    Problem(
                        f"{where}.model",
                        f"no model found at {competitor.model!r}: expected {models.FORMS}",
                    )
                )
                sizes[role] = None
                continue
        if counted is not None and competitor.parameters and counted != competitor.parameters:
            log.info(
                "%s competitor declares %d parameters; its files hold %d, which wins",
                role.value,
                competitor.parameters,
                counted,
            )
        sizes[role] = counted if counted is not None else competitor.parameters
        if sizes[role] is None:
            problems.append(
                Problem(
                    f"{where}.parameters",
                    "cannot read the parameter count from the model's files; declare it",
                )
            )
    return sizes, problems


def check_local(experiment: ProspectExperiment, *, base_dir: Path) -> list[Problem]:
    """Everything the local mode can check before it starts any work."""
    spec = experiment.spec
    problems: list[Problem] = []

    source = spec.benchmark.source
    if "://" not in source and not (base_dir / source).is_file():
        problems.append(Problem("spec.benchmark.source", f"no file at {base_dir / source}"))
    elif "://" not in source:
        # Reading a local benchmark takes a fraction of a second and catches a file of
        # another format before any server starts.
        try:
            load_benchmark(spec.benchmark, base_dir=base_dir, held_out_fraction=0.0, quiet=True)
        except BenchmarkError as exc:
            problems.append(Problem("spec.benchmark", str(exc)))

    sizes, size_problems = competitor_sizes(experiment, base_dir=base_dir)
    problems.extend(size_problems)
    large, small = sizes.get(Role.LARGE), sizes.get(Role.SMALL)
    if large is not None and small is not None and large <= small:
        verdict = "equal" if large == small else "smaller"
        problems.append(
            Problem(
                "spec.competitors",
                f"the large competitor has {large:,} parameters and the small one {small:,}: "
                f"{verdict} sizes would make a tie likely, and the design needs two models "
                "of clearly different size",
            )
        )

    training = spec.training
    if training.enabled and training.target_model is not None:
        try:
            found = models.parameter_count(training.target_model, base_dir=base_dir)
        except models.ModelError as exc:
            problems.append(Problem("spec.training.targetModel", str(exc)))
        else:
            if found is None and not training.target_model.startswith(("hf://", "s3://")):
                problems.append(
                    Problem(
                        "spec.training.targetModel",
                        f"no model at {training.target_model!r}",
                    )
                )
    if training.enabled and training.target is not None:
        target = spec.competitors.by_role(training.target)
        if target.model is None:
            problems.append(
                Problem(
                    "spec.training.target",
                    f"the {training.target.value} competitor is an endpoint with no model "
                    "files to train; set spec.training.targetModel",
                )
            )

    return problems


def _cluster_model_problem(ref: str, *, models_pvc: str | None) -> str | None:
    """Why a pod could not load this model reference, or None when it can."""
    if ref.startswith("s3://"):
        return None
    if ref.startswith("hf://"):
        repository = ref[len("hf://") :].partition("@")[0]
        if repository.count("/") != 1:
            return (
                f"{ref!r}: vLLM serves a Hugging Face repository (hf://owner/name), not one "
                "file of it; put a GGUF file on spec.kubernetes.modelsPvc instead"
            )
        return None
    if "://" in ref:
        return (
            f"{ref!r} is for the local mode only; in a cluster use hf://owner/name, "
            "s3://bucket/prefix, or a path on spec.kubernetes.modelsPvc"
        )
    if models_pvc is None:
        return (
            f"{ref!r} is a path, which a pod finds only on a volume: set "
            "spec.kubernetes.modelsPvc (mounted at /models), or use hf:// or s3://"
        )
    return None


def check_cluster(experiment: ProspectExperiment) -> list[str]:
    """What keeps the operator from running this experiment, checked before it creates anything.

    Each entry reads "<field>: <what is wrong and what to do>". The operator never reads
    files, so this looks only at the document; the CRD's schema and CEL rules have already
    refused what they can express.
    """
    spec = experiment.spec
    pvc = spec.kubernetes.models_pvc
    problems: list[str] = []

    for role in Role:
        competitor = spec.competitors.by_role(role)
        where = f"spec.competitors.{role.value}"
        if competitor.model is not None:
            problem = _cluster_model_problem(competitor.model, models_pvc=pvc)
            if problem:
                problems.append(f"{where}.model: {problem}")
        serving = competitor.serving
        gpus = serving.resources.gpus
        if gpus and serving.tensor_parallel_size > gpus:
            problems.append(
                f"{where}.serving.tensorParallelSize: {serving.tensor_parallel_size} needs as "
                f"many GPUs, but serving.resources.gpus is {gpus}"
            )

    source = spec.benchmark.source
    if not source.startswith(("hf://", "s3://")) and not (pvc and source.startswith("/models/")):
        problems.append(
            f"spec.benchmark.source: {source!r} is a local file, which stage pods cannot "
            "read; use s3://bucket/key or hf://owner/dataset (or a /models/ path on "
            "spec.kubernetes.modelsPvc)"
        )

    if not spec.storage.is_s3:
        problems.append(
            "spec.storage.uri: stages run in separate pods and share their results through "
            "an S3 or MinIO store; set an s3://bucket/prefix URI"
        )
    elif not spec.storage.credentials_secret:
        problems.append(
            "spec.storage.credentialsSecret: name the Secret (keys accessKey and secretKey) "
            "that holds the store's credentials"
        )

    training = spec.training
    if training.enabled and training.target_model is not None:
        problem = _cluster_model_problem(training.target_model, models_pvc=pvc)
        if problem:
            problems.append(f"spec.training.targetModel: {problem}")
    target = training.target
    if training.enabled and target is not None and spec.competitors.by_role(target).model is None:
        problems.append(
            f"spec.training.target: the {target.value} competitor is an existing endpoint "
            "with no model to train; set spec.training.targetModel"
        )

    return problems
