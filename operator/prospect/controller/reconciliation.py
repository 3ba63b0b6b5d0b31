"""One reconciliation: from the experiment and what the cluster shows, what to do next.

This is a pure function (:func:`plan`) so that it can be reasoned about and tested without a
cluster. It is level-triggered: it looks at which children exist and how they ended, never at
what happened in between, so running it twice creates nothing twice and an operator restarted
in any phase continues from the cluster's state. A stage is finished when its workload reports
completion; its results come from the summary its pod left in its termination message.

The spec that runs is frozen in an immutable ConfigMap when the experiment is accepted. An edit
after that is not applied: the SpecApplied condition turns False with the reason, so one dataset
never mixes two specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from pydantic import ValidationError

from prospect import checks
from prospect.controller import manifests, naming, servers, workloads
from prospect.controller.observations import (
    Observed,
    last_failure,
    server_state,
    summaries,
    workload_state,
)
from prospect.controller.status import (
    TERMINAL,
    ConditionType,
    ExperimentStatus,
    Phase,
    set_condition,
)
from prospect.spec import ProspectExperiment, Role, TrainingMethod

__all__ = ["Event", "Plan", "plan"]

Manifest = dict[str, Any]
_C = naming.Component
_SERVER_COMPONENTS = (_C.LARGE, _C.SMALL, _C.TARGET, _C.BASELINE)
_STAGE_CONDITIONS = (
    ConditionType.COMPETITORS_SERVING,
    ConditionType.GRADED,
    ConditionType.COMPETITORS_DISTINCT,
    ConditionType.DATASET_WRITTEN,
    ConditionType.TRAINED,
    ConditionType.EVALUATED,
)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the experiment."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Plan:
    """What one reconciliation decided: the caller creates, scales, patches and posts it."""

    status: ExperimentStatus
    creates: list[Manifest] = field(default_factory=list)
    scales: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)


class _StageFailed(Exception):
    def __init__(self, reason: str, message: str, condition: ConditionType | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.condition = condition


def plan(body: Mapping[str, Any], observed: Observed, *, now: datetime) -> Plan:
    """Decide the next step for one experiment.

    Args:
        body: The ProspectExperiment as the API returned it (status included).
        observed: Its children, as listed just before.
        now: The time to stamp on condition transitions.
    """
    return _Reconciliation(body, observed, now).run()


def _format_errors(error: ValidationError) -> list[str]:
    problems = []
    for detail in error.errors():
        where = ".".join(str(part) for part in detail["loc"])
        problems.append(f"{where}: {detail['msg']}")
    return problems


def _ratio(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f}"


class _Reconciliation:
    def __init__(self, body: Mapping[str, Any], observed: Observed, now: datetime) -> None:
        self.body = body
        self.observed = observed
        self.now = now.replace(microsecond=0)
        self.generation = (body.get("metadata") or {}).get("generation")
        try:
            self.old = ExperimentStatus.model_validate(body.get("status") or {})
        except ValidationError:
            self.old = ExperimentStatus()
        self.status = self.old.model_copy(deep=True)
        self.plan = Plan(status=self.status)
        self.running: ConditionType | None = None

    # The sequence.

    def run(self) -> Plan:
        if self._corrected_after_refusal():
            self.old = ExperimentStatus()
            self.status = self.plan.status = ExperimentStatus()
        self.status.observed_generation = self.generation
        if self.old.phase in TERMINAL:
            self._release_servers()
            return self.plan
        try:
            experiment = self._accept()
            if self._advance(experiment):
                self._succeed(experiment)
        except _StageFailed as failure:
            self._fail(failure)
        self._announce_phase()
        return self.plan

    def _corrected_after_refusal(self) -> bool:
        """A spec refused before anything was created is looked at again once it is edited."""
        old = self.old
        return (
            old.phase == Phase.FAILED
            and old.reason == "InvalidSpec"
            and old.spec_digest is None
            and self.generation is not None
            and old.observed_generation != self.generation
        )

    def _advance(self, x: ProspectExperiment) -> bool:
        return (
            self._grading(x)
            and self._writing(x)
            and self._training(x)
            and self._evaluating(x)
            and self._reporting(x)
        )

    # Acceptance: the spec that runs, frozen.

    def _current(self) -> tuple[ProspectExperiment | None, list[str]]:
        try:
            experiment = manifests.parse_experiment(self.body)
        except ValidationError as error:
            return None, _format_errors(error)
        return experiment, checks.check_cluster(experiment)

    def _accept(self) -> ProspectExperiment:
        current, problems = self._current()
        config_map = self.observed.config_map
        if config_map is not None:
            try:
                document = yaml.safe_load((config_map.get("data") or {})[manifests.EXPERIMENT_KEY])
                accepted = ProspectExperiment.model_validate(document)
            except (KeyError, yaml.YAMLError, ValidationError) as error:
                raise _StageFailed(
                    "ConfigMapUnreadable",
                    f"ConfigMap {config_map['metadata']['name']} no longer holds a valid "
                    f"experiment ({type(error).__name__}); delete and re-create the experiment",
                ) from None
            self.status.spec_digest = self.status.spec_digest or accepted.spec.digest()
        elif self.status.spec_digest:
            if current is None or current.spec.digest() != self.status.spec_digest:
                raise _StageFailed(
                    "ConfigMapLost",
                    "the ConfigMap holding the running spec was deleted and the spec has "
                    "changed since; the operator cannot tell which spec the stages ran with. "
                    "Delete and re-create the experiment.",
                )
            accepted = current
            self.plan.creates.append(manifests.experiment_config_map(accepted))
        else:
            accepted = self._accept_first(current, problems)
        self._spec_applied(current, problems, accepted)
        return accepted

    def _accept_first(
        self, current: ProspectExperiment | None, problems: list[str]
    ) -> ProspectExperiment:
        if current is None or problems:
            raise _StageFailed("InvalidSpec", "; ".join(problems))
        engine = current.spec.training.engine
        kind = workloads.ENGINE_KINDS[engine][1]
        if current.spec.training.enabled and kind in self.observed.missing_kinds:
            raise _StageFailed(
                "TrainingEngineMissing",
                f"spec.training.engine is {engine}, but this cluster serves no {kind} API; "
                "install the Kubeflow operator that provides it, or use engine job",
            )
        self.plan.creates.append(manifests.experiment_config_map(current))
        self.status.spec_digest = current.spec.digest()
        self.status.accepted_generation = self.generation
        self.status.started_at = self.now
        for stage in _STAGE_CONDITIONS:
            self._condition(stage, None, "NotStarted", "")
        self.plan.events.append(
            Event("Normal", "Accepted", f"spec generation {self.generation} accepted and frozen")
        )
        return current

    def _spec_applied(
        self,
        current: ProspectExperiment | None,
        problems: list[str],
        accepted: ProspectExperiment,
    ) -> None:
        started = self.status.accepted_generation
        if current is not None and current.spec.digest() == accepted.spec.digest():
            self._condition(
                ConditionType.SPEC_APPLIED, True, "Applied", f"generation {started} is running"
            )
            return
        if current is None:
            reason, why = "InvalidSpecChange", f"the edited spec is invalid: {'; '.join(problems)}"
        else:
            reason, why = (
                "SpecChangedAfterStart",
                "the spec was edited after the experiment started",
            )
        running = f"Generation {started}" if started else "The accepted spec"
        message = (
            f"{why}. {running} keeps running unchanged, so one dataset never mixes two specs; "
            "to run the edited spec, create a new ProspectExperiment."
        )
        if self._condition(ConditionType.SPEC_APPLIED, False, reason, message):
            self.plan.events.append(Event("Warning", reason, message))

    # Stages.

    def _grading(self, x: ProspectExperiment) -> bool:
        """Serve both competitors, grade every shard, then report accuracy and the gap."""
        grade_name = naming.name_for(x.name, _C.GRADE)
        report_name = naming.name_for(x.name, _C.REPORT)
        grade = workload_state(self.observed.workloads.get(grade_name))
        report = workload_state(self.observed.workloads.get(report_name))
        done = grade.complete and report.complete
        serving = self._competitor_servers(x, needed=not done)
        self.running = ConditionType.GRADED

        if not grade.exists:
            if not serving:
                self._phase(Phase.SERVING, "ServersStarting", self._serving_message(x))
                self._condition(ConditionType.GRADED, False, "Waiting", "servers are starting")
                return False
            self.plan.creates.append(workloads.grade_job(x))
            self._phase(Phase.GRADING, "GradingStarted", f"grading in Job {grade_name}")
            self._condition(ConditionType.GRADED, False, "InProgress", "grading started")
            return False

        progress = self._grade_progress(x, grade_name)
        if grade.failed:
            raise _StageFailed("GradingFailed", self._failure(x, _C.GRADE, grade_name, grade))
        if not grade.complete:
            self._phase(Phase.GRADING, "Grading", progress)
            self._condition(ConditionType.GRADED, False, "InProgress", progress)
            return False
        if self._condition(ConditionType.GRADED, True, "Graded", progress):
            self._duration("grade", grade.seconds)

        self.running = ConditionType.COMPETITORS_DISTINCT
        if not report.exists:
            self.plan.creates.append(workloads.report_job(x))
            self._phase(Phase.GRADING, "Reporting", "measuring the accuracy gap")
            return False
        if report.failed:
            raise _StageFailed("ReportFailed", self._failure(x, _C.REPORT, report_name, report))
        if not report.complete:
            self._phase(Phase.GRADING, "Reporting", "measuring the accuracy gap")
            return False
        self._read_report(x, _C.REPORT, report_name)
        return True

    def _writing(self, x: ProspectExperiment) -> bool:
        name = naming.name_for(x.name, _C.WRITE)
        write = workload_state(self.observed.workloads.get(name))
        self.running = ConditionType.DATASET_WRITTEN
        if not write.exists:
            self.plan.creates.append(workloads.write_job(x))
        if write.failed:
            raise _StageFailed("WritingDatasetFailed", self._failure(x, _C.WRITE, name, write))
        if not write.complete:
            message = f"writing the dataset in Job {name}"
            self._phase(Phase.WRITING_DATASET, "WritingDataset", message)
            self._condition(ConditionType.DATASET_WRITTEN, False, "InProgress", message)
            return False

        summary = self._summary(x, _C.WRITE, name)
        if summary:
            self.status.dataset.uri = summary.get("datasetUri")
            self.status.dataset.digest = summary.get("datasetDigest")
            self.status.incorrect = summary.get("incorrect")
            self.status.pairs = summary.get("pairs")
        message = (
            f"{self.status.incorrect} incorrect answers and {self.status.pairs} preference pairs "
            f"at {self.status.dataset.uri} (sha256 {self.status.dataset.digest})"
        )
        if self._condition(ConditionType.DATASET_WRITTEN, True, "Written", message):
            self._duration("write", write.seconds)
        self._refuse_empty_dataset(x)
        return True

    def _refuse_empty_dataset(self, x: ProspectExperiment) -> None:
        training = x.spec.training
        if not training.enabled:
            return
        if training.method == TrainingMethod.KTO and self.status.incorrect == 0:
            raise _StageFailed(
                "NothingToTrainOn",
                "neither competitor answered an item of the train split incorrectly, so KTO "
                "has no undesirable examples; use a harder benchmark or a weaker competitor",
                ConditionType.TRAINED,
            )
        if training.method == TrainingMethod.DPO and self.status.pairs == 0:
            raise _StageFailed(
                "NothingToTrainOn",
                "no preference pairs could be built (no item had a correct and an incorrect "
                "answer); use a harder benchmark, or method kto",
                ConditionType.TRAINED,
            )

    def _training(self, x: ProspectExperiment) -> bool:
        training = x.spec.training
        if not training.enabled:
            self._condition(
                ConditionType.TRAINED, False, "Disabled", "spec.training.enabled is false"
            )
            return True
        name = naming.name_for(x.name, _C.TRAIN)
        kind = workloads.ENGINE_KINDS[training.engine][1]
        train = workload_state(self.observed.workloads.get(name))
        self.running = ConditionType.TRAINED
        if not train.exists:
            self.plan.creates.append(workloads.train_workload(x))
        if train.failed:
            raise _StageFailed("TrainingFailed", self._failure(x, _C.TRAIN, name, train, kind))
        if not train.complete:
            target = training.target.value if training.target else training.target_model
            message = f"training {target} with {training.method.value.upper()} in {kind} {name}"
            self._phase(Phase.TRAINING, "Training", message)
            self._condition(ConditionType.TRAINED, False, "InProgress", message)
            return False

        summary = self._summary(x, _C.TRAIN, name)
        self.status.model_uri = summary.get("modelUri") or self.status.model_uri
        message = f"model at {self.status.model_uri}"
        if self._condition(ConditionType.TRAINED, True, "Trained", message):
            self._duration("train", train.seconds)
        return True

    def _evaluating(self, x: ProspectExperiment) -> bool:
        if not manifests.evaluates(x):
            self._condition(
                ConditionType.EVALUATED,
                False,
                "Disabled",
                "evaluation needs training and evaluation enabled and heldOutFraction > 0",
            )
            return True
        name = naming.name_for(x.name, _C.EVALUATE)
        evaluate = workload_state(self.observed.workloads.get(name))
        wanted = [(_C.TARGET, servers.target_deployment, servers.target_service)]
        if servers.has_baseline(x):
            wanted.append((_C.BASELINE, servers.baseline_deployment, servers.baseline_service))
        ready = self._servers(x, wanted, needed=not evaluate.complete)
        self.running = ConditionType.EVALUATED

        if not evaluate.exists:
            if not ready:
                message = "starting a server for the trained target"
                self._phase(Phase.EVALUATING, "ServersStarting", message)
                self._condition(ConditionType.EVALUATED, False, "Waiting", message)
                return False
            self.plan.creates.append(workloads.evaluate_job(x))
        if evaluate.failed:
            raise _StageFailed("EvaluationFailed", self._failure(x, _C.EVALUATE, name, evaluate))
        if not evaluate.complete:
            message = f"grading the held-out items against the trained target in Job {name}"
            self._phase(Phase.EVALUATING, "Evaluating", message)
            self._condition(ConditionType.EVALUATED, False, "InProgress", message)
            return False

        summary = self._summary(x, _C.EVALUATE, name)
        self.status.held_out.before = summary.get("before", self.status.held_out.before)
        self.status.held_out.after = summary.get("after", self.status.held_out.after)
        held_out = self.status.held_out
        message = f"held-out accuracy {_ratio(held_out.before)} before, "
        message += f"{_ratio(held_out.after)} after"
        if self._condition(ConditionType.EVALUATED, True, "Evaluated", message):
            self._duration("evaluate", evaluate.seconds)
        return True

    def _reporting(self, x: ProspectExperiment) -> bool:
        """The final report, so the one in the store covers training and evaluation too."""
        name = naming.name_for(x.name, _C.FINAL_REPORT)
        report = workload_state(self.observed.workloads.get(name))
        self.running = None
        phase = (
            Phase.EVALUATING
            if manifests.evaluates(x)
            else Phase.TRAINING
            if x.spec.training.enabled
            else Phase.WRITING_DATASET
        )
        if not report.exists:
            self.plan.creates.append(workloads.final_report_job(x))
        if report.failed:
            raise _StageFailed("ReportFailed", self._failure(x, _C.FINAL_REPORT, name, report))
        if not report.complete:
            self._phase(phase, "Reporting", f"writing the final report in Job {name}")
            return False
        self._read_report(x, _C.FINAL_REPORT, name)
        return True

    # Servers.

    def _competitor_servers(self, x: ProspectExperiment, *, needed: bool) -> bool:
        roles = manifests.served_roles(x)
        wanted = [
            (
                _C.LARGE if role == Role.LARGE else _C.SMALL,
                lambda e, r=role: servers.competitor_deployment(e, r),
                lambda e, r=role: servers.competitor_service(e, r),
            )
            for role in roles
        ]
        ready = self._servers(x, wanted, needed=needed)
        if needed and ready:
            state, reason, message = True, "Serving", "every competitor passes /health"
            if not roles:
                reason, message = "ExternalEndpoints", "both competitors are existing endpoints"
        elif needed:
            state, reason, message = False, "Starting", self._serving_message(x)
        elif roles:
            state, reason = False, "ScaledDown"
            message = "scaled to zero after grading, so that training gets the GPUs"
        else:
            state, reason, message = True, "ExternalEndpoints", "both are existing endpoints"
        self._condition(ConditionType.COMPETITORS_SERVING, state, reason, message)
        return ready

    def _servers(self, x: ProspectExperiment, wanted: list[Any], *, needed: bool) -> bool:
        """Create or scale the given servers to one replica when needed, to zero when not.

        A server that gave up (its progress deadline passed) fails the experiment only while
        it is needed. Returns whether all of them are available.
        """
        ready = True
        for component, deployment, service in wanted:
            name = naming.name_for(x.name, component)
            state = server_state(self.observed.deployments.get(name))
            if needed:
                if not state.exists:
                    self.plan.creates.append(deployment(x))
                elif state.replicas == 0:
                    self.plan.scales[name] = 1
                if name not in self.observed.services:
                    self.plan.creates.append(service(x))
                if state.failed:
                    raise _StageFailed(
                        "ServerFailed",
                        f"the {component.suffix} server (Deployment {name}) never became "
                        f"ready: {state.message}",
                        ConditionType.COMPETITORS_SERVING
                        if component in (_C.LARGE, _C.SMALL)
                        else None,
                    )
            elif state.replicas > 0:
                self.plan.scales[name] = 0
            ready = ready and state.available
        return ready

    def _release_servers(self) -> None:
        experiment = (self.body.get("metadata") or {}).get("name", "")
        for component in _SERVER_COMPONENTS:
            name = naming.name_for(experiment, component)
            if server_state(self.observed.deployments.get(name)).replicas > 0:
                self.plan.scales[name] = 0

    def _serving_message(self, x: ProspectExperiment) -> str:
        waiting = [
            naming.name_for(x.name, _C.LARGE if role == Role.LARGE else _C.SMALL)
            for role in manifests.served_roles(x)
        ]
        return f"waiting for the competitor servers to pass /health: {', '.join(waiting)}"

    # Results.

    def _summary(
        self, x: ProspectExperiment, component: naming.Component, name: str
    ) -> dict[str, Any]:
        found = summaries(self.observed.pods, experiment=x.name, component=component, name=name)
        return found[min(found)] if found else {}

    def _grade_progress(self, x: ProspectExperiment, name: str) -> str:
        found = summaries(self.observed.pods, experiment=x.name, component=_C.GRADE, name=name)
        progress = self.status.progress
        progress.shards = x.spec.supervisor.shards
        if not found and progress.shards_completed:
            # The pods are gone (garbage-collected); keep what was read while they lived.
            return self._progress_message()
        correct: dict[str, int] = {}
        graded = total = 0
        for summary in found.values():
            graded += int(summary.get("graded") or 0)
            total += int(summary.get("total") or 0)
            for role, count in (summary.get("correct") or {}).items():
                correct[role] = correct.get(role, 0) + int(count)
        # Summaries count answers; each item is answered once by each competitor.
        answered_per_item = max(len(correct), 1)
        progress.shards_completed = len(found)
        progress.items_graded = graded // answered_per_item
        progress.items_total = total // answered_per_item
        if progress.items_graded:
            for role in Role:
                if role.value in correct:
                    value = correct[role.value] / progress.items_graded
                    setattr(self.status.accuracy, role.value, round(value, 4))
        return self._progress_message()

    def _progress_message(self) -> str:
        progress = self.status.progress
        return (
            f"{progress.shards_completed} of {progress.shards} shards graded, "
            f"{progress.items_graded} items; accuracy large {_ratio(self.status.accuracy.large)}"
            f", small {_ratio(self.status.accuracy.small)}"
        )

    def _read_report(self, x: ProspectExperiment, component: naming.Component, name: str) -> None:
        summary = self._summary(x, component, name)
        for role, value in (summary.get("accuracy") or {}).items():
            if role in {r.value for r in Role} and value is not None:
                setattr(self.status.accuracy, role, round(float(value), 4))
        self.status.gap.low = summary.get("gapLow", self.status.gap.low)
        self.status.gap.high = summary.get("gapHigh", self.status.gap.high)
        distinct = summary.get("competitorsDistinct")
        gap = f"[{_ratio(self.status.gap.low)}, {_ratio(self.status.gap.high)}]"
        if distinct is None:
            reason, message = "Unknown", f"the report Job {name} left no summary"
        elif distinct:
            reason, message = "GapSignificant", f"accuracy gap large - small is {gap}"
        else:
            reason = "GapNotSignificant"
            message = (
                f"accuracy gap large - small is {gap}, which includes zero: the competitors "
                "are statistically tied on these items, so their disagreements carry little "
                "signal; consider more items or more different models"
            )
        changed = self._condition(ConditionType.COMPETITORS_DISTINCT, distinct, reason, message)
        if changed and distinct is False:
            self.plan.events.append(Event("Warning", reason, message))
        if changed and component == _C.REPORT:
            self._duration("report", workload_state(self.observed.workloads.get(name)).seconds)

    def _failure(
        self,
        x: ProspectExperiment,
        component: naming.Component,
        name: str,
        state: Any,
        kind: str = "Job",
    ) -> str:
        message = f"{kind} {name} failed ({state.reason}"
        message += f": {state.message})" if state.message else ")"
        said = last_failure(self.observed.pods, experiment=x.name, component=component, name=name)
        return f"{message}; {said}" if said else message

    # Status.

    def _condition(
        self, kind: ConditionType, state: bool | None, reason: str, message: str
    ) -> bool:
        return set_condition(
            self.status,
            kind,
            state,
            reason=reason,
            message=message,
            generation=self.generation,
            now=self.now,
        )

    def _phase(self, phase: Phase, reason: str, message: str) -> None:
        self.status.phase = phase
        self.status.reason = reason
        self.status.message = message

    def _duration(self, stage: str, seconds: float | None) -> None:
        if seconds is not None:
            self.plan.durations[stage] = seconds

    def _succeed(self, x: ProspectExperiment) -> None:
        s = self.status
        parts = [
            f"accuracy large {_ratio(s.accuracy.large)}, small {_ratio(s.accuracy.small)}",
            f"{s.incorrect} incorrect answers kept",
        ]
        if s.model_uri:
            parts.append(f"model at {s.model_uri}")
        if s.held_out.before is not None or s.held_out.after is not None:
            parts.append(
                f"held-out {_ratio(s.held_out.before)} before, {_ratio(s.held_out.after)} after"
            )
        self._phase(Phase.SUCCEEDED, "Succeeded", "; ".join(parts))
        s.finished_at = self.now
        self._condition(ConditionType.READY, True, "Succeeded", s.message or "")
        self._release_servers()
        self.plan.events.append(Event("Normal", "Succeeded", s.message or ""))

    def _fail(self, failure: _StageFailed) -> None:
        # Nothing more starts once a stage failed, and every server lets its GPUs go.
        self.plan.creates.clear()
        self.plan.scales.clear()
        self._phase(Phase.FAILED, failure.reason, failure.message)
        self.status.finished_at = self.now
        self._condition(ConditionType.READY, False, failure.reason, failure.message)
        stage = failure.condition or self.running
        if stage is not None and stage != ConditionType.READY:
            self._condition(stage, False, failure.reason, failure.message)
        self._release_servers()
        self.plan.events.append(Event("Warning", failure.reason, failure.message))

    def _announce_phase(self) -> None:
        phase = self.status.phase
        if phase in TERMINAL:
            return
        self._condition(ConditionType.READY, False, phase.value, self.status.message or "")
        if phase != self.old.phase:
            self.plan.events.append(Event("Normal", phase.value, self.status.message or ""))
