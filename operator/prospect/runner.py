"""Stage entry points: each reads its inputs from the store and leaves its outputs there.

These are what `prospect stage <name>` runs, in a local process or in a pod alike. Each returns a
small JSON-able summary; the CLI writes it where the caller asked (a file for the local mode,
`/dev/termination-log` in a pod, where the operator reads it back).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prospect import metrics, models
from prospect.documents import ExperimentFile
from prospect.grading import Supervisor, grader_for
from prospect.records import Split
from prospect.spec import PromptStyle, ProspectExperiment, Role
from prospect.stages import grade as grading
from prospect.stages import prepare as preparing
from prospect.stages.serve import Endpoint, discover_model_name
from prospect.storage import Store, open_store

__all__ = [
    "Context",
    "StageInputError",
    "endpoint_for",
    "run_evaluate",
    "run_fetch_model",
    "run_grade",
    "run_prepare",
    "run_report",
    "run_train",
    "run_write",
]

log = logging.getLogger("prospect")

TRAINING_KEY = "training.json"
EVALUATION_KEY = "evaluation/evaluation.json"
TARGET_BEFORE = "target-before"
TARGET_AFTER = "target-after"


class StageInputError(ValueError):
    """A stage was asked to run before what it reads exists, or with an argument that names
    nothing; the message says which stage to run first or what was expected."""


ROLES = ("large", "small", "target-before", "target-after")


@dataclass(frozen=True)
class Context:
    """What every stage needs: the experiment, where it came from, and where things go."""

    file: ExperimentFile
    run_dir: Path
    store: Store

    @property
    def experiment(self) -> ProspectExperiment:
        return self.file.experiment

    @property
    def name(self) -> str:
        return self.file.experiment.name

    @classmethod
    def open(cls, file: ExperimentFile, *, run_dir: Path | None = None) -> Context:
        run_dir = run_dir or Path("runs") / file.experiment.name
        store = open_store(file.experiment.spec.storage, default_root=run_dir)
        return cls(file=file, run_dir=run_dir, store=store)

    def pushing(self, stage: str) -> contextlib.AbstractContextManager[None]:
        """Push this stage's metrics while it runs and when it ends (with a Pushgateway).

        The grouping names the shard too: parallel grading pods would otherwise replace each
        other's numbers on every push.
        """
        grouping = {"experiment": self.name, "stage": stage}
        shard = os.environ.get("JOB_COMPLETION_INDEX")
        if shard is not None:
            grouping["shard"] = shard
        return metrics.pushing(
            self.experiment.spec.metrics.pushgateway, job="prospect-stage", grouping=grouping
        )


def endpoint_for(
    experiment: ProspectExperiment, role: str, base_url: str, *, model: str | None = None
) -> Endpoint:
    """The endpoint of a role, with the prompt style and limits of the model behind it.

    Evaluation roles (target-before/-after) take the settings of the training target's
    competitor, so the target is asked exactly as it was asked as a competitor.
    """
    spec = experiment.spec
    if role not in ROLES:
        raise StageInputError(f"unknown role {role!r} in ROLE=URL: expected one of {ROLES}")
    source = role
    if role in {TARGET_BEFORE, TARGET_AFTER}:
        source = (spec.training.target or Role.SMALL).value
    competitor = spec.competitors.by_role(Role(source))
    name = model or (competitor.served_model_name if role == source else None)
    name = name or discover_model_name(base_url)
    return Endpoint(
        role=role,
        base_url=base_url.rstrip("/"),
        model=name,
        style=competitor.prompt_style,
        max_tokens=competitor.max_tokens,
        temperature=competitor.temperature,
        display_name=competitor.model or name,
    )


def _supervisor(experiment: ProspectExperiment) -> Supervisor:
    spec = experiment.spec
    return Supervisor(
        grader_for(spec.benchmark.format, spec.supervisor.grader),
        numeric_tolerance=spec.supervisor.numeric_tolerance,
    )


EXAM_SPEC_KEY = "items/exam-spec.json"


def exam_identity(experiment: ProspectExperiment) -> dict[str, Any]:
    """The parts of a spec that decide which answers are graded and how they are marked.

    Two runs that agree on these may share graded records; anything else (training, storage,
    concurrency) may change between runs of the same exam.
    """
    spec = experiment.spec
    return {
        "benchmark": spec.benchmark.model_dump(mode="json", by_alias=True),
        "competitors": spec.competitors.model_dump(mode="json", by_alias=True),
        "supervisor": spec.supervisor.model_dump(
            mode="json",
            by_alias=True,
            include={"grader", "numeric_tolerance", "extractor", "shards"},
        ),
        "heldOutFraction": spec.evaluation.held_out_fraction if spec.evaluation.enabled else 0,
    }


def exam_digest(experiment: ProspectExperiment) -> str:
    """sha256 of :func:`exam_identity`: what a dataset version records as its spec."""
    canonical = json.dumps(exam_identity(experiment), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ExamChanged(ValueError):
    """The store holds graded answers of a different exam; mixing them is refused."""


def _guard_exam(ctx: Context) -> None:
    identity = exam_identity(ctx.experiment)
    if ctx.store.exists(EXAM_SPEC_KEY):
        before = json.loads(ctx.store.get_bytes(EXAM_SPEC_KEY))
        changed = sorted(k for k in identity if before.get(k) != identity[k])
        if changed:
            fields = ", ".join(f"spec.{k}" for k in changed)
            raise ExamChanged(
                f"{ctx.store.uri()} holds answers graded under a different {fields}; they "
                "would be mixed into one dataset. Use another run folder (--run-dir) or "
                "storage prefix, or delete this one to start over"
            )
        return
    ctx.store.put_bytes(EXAM_SPEC_KEY, json.dumps(identity, indent=2, sort_keys=True).encode())


def run_prepare(ctx: Context) -> dict[str, Any]:
    ctx.store.check()
    _guard_exam(ctx)
    with ctx.pushing("prepare"):
        exam = preparing.prepare(ctx.experiment, store=ctx.store, base_dir=ctx.file.base_dir)
    return {
        "items": len(exam.items),
        "heldOut": len(exam.held_out),
        "setAside": len(exam.set_aside),
    }


def run_grade(
    ctx: Context,
    *,
    endpoints: Sequence[Endpoint],
    extractor: Endpoint | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    held_out_only: bool = False,
    progress: grading.Progress | None = None,
) -> dict[str, Any]:
    """Grade the exam (written by `prepare`, which runs first if it has not)."""
    _guard_exam(ctx)
    if not ctx.store.exists(preparing.ITEMS_KEY):
        run_prepare(ctx)
    exam = preparing.read_exam(ctx.store)
    items = exam.held_out if held_out_only else exam.items
    with ctx.pushing("evaluate" if held_out_only else "grade"):
        summary = grading.grade(
            experiment=ctx.name,
            spec=ctx.experiment.spec.supervisor,
            supervisor=_supervisor(ctx.experiment),
            store=ctx.store,
            endpoints=endpoints,
            items=items,
            few_shot=exam.few_shot,
            shard_index=shard_index,
            shard_count=shard_count,
            extractor=extractor,
            progress=progress,
        )
    return summary.as_json()


def run_write(ctx: Context) -> dict[str, Any]:
    from prospect.stages import write

    if not grading.read_records(ctx.store):
        raise StageInputError(
            f"no graded answers in {ctx.store.uri()}: run the prepare and grade stages first"
        )
    info = json.loads(ctx.store.get_bytes(preparing.BENCHMARK_KEY))
    with ctx.pushing("write"):
        manifest = write.write_dataset(
            store=ctx.store,
            experiment=ctx.name,
            # The exam's digest, not the whole spec's: changing only how the target is trained
            # must not make a new dataset version of the same answers.
            spec_digest=exam_digest(ctx.experiment),
            benchmark_digest=info["sha256"],
        )
    counts = manifest.counts
    return {
        "datasetVersion": manifest.version,
        "datasetUri": ctx.store.uri(f"dataset/{manifest.version}"),
        "datasetDigest": manifest.content_digest,
        "incorrect": sum(counts.get("incorrect", {}).values()),
        "pairs": sum(counts.get("preferences", {}).values()),
    }


def _target_ref(ctx: Context) -> str:
    training = ctx.experiment.spec.training
    if training.target_model is not None:
        return training.target_model
    competitor = ctx.experiment.spec.competitors.by_role(training.target or Role.SMALL)
    if competitor.model is None:
        raise StageInputError(
            "spec.training.target names an endpoint competitor; set spec.training.targetModel"
        )
    return competitor.model


def _store_for(ctx: Context) -> Callable[[str], Store]:
    def open_at(uri: str) -> Store:
        spec = ctx.experiment.spec.storage.model_copy(update={"uri": uri})
        return open_store(spec, default_root=ctx.run_dir)

    return open_at


def resolve_model(ctx: Context, ref: str) -> models.ResolvedModel:
    return models.resolve(ref, base_dir=ctx.file.base_dir, store_for=_store_for(ctx))


def _upload_folder(store: Store, prefix: str, folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            store.put_file(f"{prefix}/{path.relative_to(folder)}", path)


def run_train(ctx: Context, *, on_log: Callable[[dict[str, Any]], None] | None = None) -> dict:
    """Train the target on the newest complete dataset version and store the model."""
    from prospect.stages import train, write

    manifest = write.latest_version(ctx.store)
    if manifest is None:
        raise StageInputError(
            f"no complete dataset in {ctx.store.uri()}: run the write stage first"
        )
    target = resolve_model(ctx, _target_ref(ctx))
    asked_as = ctx.experiment.spec.competitors.by_role(
        ctx.experiment.spec.training.target or Role.SMALL
    ).prompt_style
    prefix = f"models/{manifest.version}"

    with tempfile.TemporaryDirectory(prefix="prospect-train-") as scratch:
        work = Path(scratch)
        data = {}
        for name in ("kto.parquet", "preferences.parquet"):
            data[name] = work / name
            ctx.store.get_file(f"dataset/{manifest.version}/{name}", data[name])
        with ctx.pushing("train"):
            result = train.train(
                spec=ctx.experiment.spec.training,
                model_path=target.path,
                kto_path=data["kto.parquet"],
                preferences_path=data["preferences.parquet"],
                output_dir=work / "out",
                experiment=ctx.name,
                on_log=on_log,
                chat=asked_as is PromptStyle.CHAT,
            )
        _upload_folder(ctx.store, f"{prefix}/final", result.model_dir)
    # A new model makes earlier after-training verdicts stale: they were another model's.
    ctx.store.delete(f"graded/{TARGET_AFTER}")
    ctx.store.delete(EVALUATION_KEY)
    summary = {
        "method": result.method,
        "steps": result.steps,
        "finalLoss": result.final_loss,
        "desirableWeight": result.desirable_weight,
        "undesirableWeight": result.undesirable_weight,
        "nDesirable": result.n_desirable,
        "nUndesirable": result.n_undesirable,
        "seconds": result.seconds,
        "datasetVersion": manifest.version,
        "target": target.ref,
        "modelUri": ctx.store.uri(f"{prefix}/final"),
        "history": result.history,
    }
    ctx.store.put_bytes(f"{prefix}/{TRAINING_KEY}", json.dumps(summary, indent=2).encode())
    ctx.store.put_bytes(TRAINING_KEY, json.dumps(summary, indent=2).encode())
    return {k: v for k, v in summary.items() if k != "history"}


def run_fetch_model(ctx: Context, *, to: Path, role: str | None = None) -> Path:
    """Copy a model into a folder a server can load: the newest trained target from the store,
    or, with `role`, that role's model resolved from its reference (s3://, package://, GGUF)."""
    if role is not None:
        if role == TARGET_BEFORE:
            ref = _target_ref(ctx)
        else:
            competitor = ctx.experiment.spec.competitors.by_role(Role(role))
            if competitor.model is None:
                raise StageInputError(
                    f"the {role} competitor is an endpoint; there is no model to fetch"
                )
            ref = competitor.model
        resolved = resolve_model(ctx, ref)
        tmp = to.with_name(f".{to.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(resolved.path, tmp)
        shutil.rmtree(to, ignore_errors=True)
        tmp.rename(to)
        return to
    if not ctx.store.exists(TRAINING_KEY):
        raise StageInputError(f"no trained model in {ctx.store.uri()}: run the train stage first")
    summary = json.loads(ctx.store.get_bytes(TRAINING_KEY))
    prefix = f"models/{summary['datasetVersion']}/final"
    keys = ctx.store.list(prefix)
    if not keys:
        raise StageInputError(f"no model under {ctx.store.uri(prefix)}: run the train stage")
    tmp = to.with_name(f".{to.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for key in keys:
        ctx.store.get_file(key, tmp / key[len(prefix) + 1 :])
    shutil.rmtree(to, ignore_errors=True)
    tmp.rename(to)
    return to


def run_evaluate(
    ctx: Context,
    *,
    after: Endpoint,
    before: Endpoint | None = None,
    progress: grading.Progress | None = None,
) -> dict[str, Any]:
    """Grade the trained target (and, when it is no competitor, the untrained one) on the
    held-out items; the same supervisor marks them."""
    endpoints = [after, *([before] if before else [])]
    run_grade(ctx, endpoints=endpoints, held_out_only=True, progress=progress)
    result = evaluation(ctx)
    ctx.store.put_bytes(EVALUATION_KEY, json.dumps(result, indent=2).encode())
    with ctx.pushing("evaluate"):
        for when in ("before", "after"):
            if result.get(when) is not None:
                metrics.held_out_accuracy_ratio.labels(ctx.name, when).set(result[when])
    return {"before": result.get("before"), "after": result.get("after")}


def _before_role(ctx: Context) -> str:
    training = ctx.experiment.spec.training
    return training.target.value if training.target is not None else TARGET_BEFORE


def evaluation(ctx: Context) -> dict[str, Any]:
    """Before/after held-out accuracy of the target from the graded records."""
    from prospect.comparison import accuracy, compare

    before_role = _before_role(ctx)
    records = grading.read_records(ctx.store)
    before = {
        r.item_id: r.verdict.is_correct
        for r in records
        if r.role == before_role and r.split is Split.HELD_OUT
    }
    after = {
        r.item_id: r.verdict.is_correct
        for r in records
        if r.role == TARGET_AFTER and r.split is Split.HELD_OUT
    }
    acc_before = accuracy(sum(before.values()), len(before))
    acc_after = accuracy(sum(after.values()), len(after))
    paired = compare(after, before)
    return {
        "beforeRole": before_role,
        "before": acc_before.value if before else None,
        "after": acc_after.value if after else None,
        "beforeAccuracy": acc_before.as_dict(),
        "afterAccuracy": acc_after.as_dict(),
        "difference": paired.as_dict(),
    }


def run_report(ctx: Context) -> dict[str, Any]:
    from prospect.stages import report

    if not grading.read_records(ctx.store):
        raise StageInputError(
            f"nothing to report in {ctx.store.uri()}: run the prepare and grade stages first"
        )
    return report.write_report(ctx.store, experiment=ctx.experiment, run_dir=ctx.run_dir)
