"""What a user reads in `kubectl get pex` and `kubectl describe`: phases, conditions, results.

The status is a pydantic model for the same reason the spec is: the CRD's status schema is
generated from it (:mod:`prospect.crd`), so what the operator writes and what the API server
accepts cannot drift apart. The controller is the only writer.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "TERMINAL",
    "Accuracy",
    "Condition",
    "ConditionType",
    "Dataset",
    "ExperimentStatus",
    "HeldOut",
    "Phase",
    "Progress",
    "set_condition",
]


class Phase(StrEnum):
    """Where an experiment is; every phase but the last two names the stage that is running."""

    PENDING = "Pending"
    SERVING = "Serving"
    GRADING = "Grading"
    WRITING_DATASET = "WritingDataset"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class ConditionType(StrEnum):
    READY = "Ready"
    SPEC_APPLIED = "SpecApplied"
    COMPETITORS_SERVING = "CompetitorsServing"
    COMPETITORS_DISTINCT = "CompetitorsDistinct"
    GRADED = "Graded"
    DATASET_WRITTEN = "DatasetWritten"
    TRAINED = "Trained"
    EVALUATED = "Evaluated"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(_Model):
    """One condition in the standard Kubernetes shape (metav1.Condition)."""

    type: str = Field(description="What the condition is about, e.g. Ready or Graded.")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        max_length=1024,
        description="A CamelCase word a program can switch on.",
    )
    message: str = Field("", max_length=32768, description="What a human should know.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(
        None, ge=0, description="The experiment's generation this condition was set for."
    )


class Progress(_Model):
    shards: int = Field(0, ge=0, description="Grading shards (completions of the Indexed Job).")
    shards_completed: int = Field(0, ge=0, description="Shards whose pod finished.")
    items_graded: int = Field(0, ge=0, description="Items both competitors answered, so far.")
    items_total: int = Field(0, ge=0, description="Items in the finished shards.")


class Accuracy(_Model):
    large: float | None = Field(None, description="Share of items the large competitor got right.")
    small: float | None = Field(None, description="Share of items the small competitor got right.")


class Gap(_Model):
    low: float | None = Field(None, description="Lower bound of the accuracy gap's interval.")
    high: float | None = Field(None, description="Upper bound of the accuracy gap's interval.")


class Dataset(_Model):
    uri: str | None = Field(None, description="Where the dataset version was written.")
    digest: str | None = Field(None, description="sha256 of the dataset's manifest.")


class HeldOut(_Model):
    before: float | None = Field(None, description="Target's held-out accuracy before training.")
    after: float | None = Field(None, description="Target's held-out accuracy after training.")


class ExperimentStatus(_Model):
    """The experiment's status subresource."""

    phase: Phase = Field(Phase.PENDING, description="The stage running now, or the outcome.")
    reason: str | None = Field(None, description="Why the experiment is in this phase.")
    message: str | None = Field(None, description="What is happening, or what went wrong.")
    observed_generation: int | None = Field(
        None, description="The latest generation of the spec the operator has looked at."
    )
    accepted_generation: int | None = Field(
        None, description="The generation whose spec is running; later edits are not applied."
    )
    spec_digest: str | None = Field(None, description="sha256 of the running spec.")
    conditions: list[Condition] = Field(default_factory=list)
    progress: Progress = Field(default_factory=Progress)
    accuracy: Accuracy = Field(default_factory=Accuracy)
    gap: Gap = Field(default_factory=Gap)
    incorrect: int | None = Field(None, description="Incorrect answers kept in the dataset.")
    pairs: int | None = Field(None, description="Preference pairs built.")
    dataset: Dataset = Field(default_factory=Dataset)
    model_uri: str | None = Field(None, description="Where the trained model was written.")
    held_out: HeldOut = Field(default_factory=HeldOut)
    started_at: datetime | None = Field(None, description="When the operator accepted the spec.")
    finished_at: datetime | None = Field(None, description="When it succeeded or failed.")

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind.value), None)

    def dump(self) -> dict[str, object]:
        """The status as the API stores it: camelCase, no empty values."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def set_condition(
    status: ExperimentStatus,
    kind: ConditionType,
    state: bool | None,
    *,
    reason: str,
    message: str = "",
    generation: int | None,
    now: datetime,
) -> bool:
    """Set one condition; the transition time moves only when the status itself changes.

    Returns whether the status (True/False/Unknown) changed, which is when an Event is due.
    """
    value: Literal["True", "False", "Unknown"] = (
        "Unknown" if state is None else "True" if state else "False"
    )
    existing = status.condition(kind)
    if existing is not None and existing.status == value:
        existing.reason = reason
        existing.message = message
        existing.observed_generation = generation
        return False
    fresh = Condition(
        type=kind.value,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=now,
        observed_generation=generation,
    )
    if existing is None:
        status.conditions.append(fresh)
    else:
        status.conditions[status.conditions.index(existing)] = fresh
    return True
