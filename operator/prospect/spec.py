"""The `ProspectExperiment` resource: the single source of truth for what a user writes.

The same model validates a YAML file for the local mode, generates the CRD's openAPIV3Schema
(:mod:`prospect.crd`), feeds the CLI's `validate` command and the operator's admission checks.
Field names are camelCase on the wire (as Kubernetes users expect) and snake_case in Python.

Only checks that need nothing but the document live here (types, ranges, the two competitors
naming different models). Checks that need files or the network (parameter counts, whether a
training target exists) live in :mod:`prospect.checks`, so the operator can run this model
anywhere.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "BenchmarkFormat",
    "BenchmarkSpec",
    "Competitor",
    "Competitors",
    "EvaluationSpec",
    "ExtractorSpec",
    "GraderKind",
    "KubernetesSpec",
    "LoraSpec",
    "MetricsSpec",
    "PromptStyle",
    "ProspectExperiment",
    "Resources",
    "Role",
    "ServingSpec",
    "StorageSpec",
    "SupervisorSpec",
    "TrainingMethod",
    "TrainingSpec",
]

GROUP = "prospect.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ProspectExperiment"
PLURAL = "prospectexperiments"


class _Model(BaseModel):
    """Base for every part of the spec: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        validate_default=True,
    )


class Role(StrEnum):
    """The two competitors, named by their intended capability."""

    LARGE = "large"
    SMALL = "small"


class BenchmarkFormat(StrEnum):
    """How benchmark rows are read and which grader marks them.

    Named formats know their benchmark's columns; the three generic ones take a field mapping.
    """

    GSM8K = "gsm8k"
    ARC = "arc"
    MMLU = "mmlu"
    TRUTHFULQA = "truthfulqa"
    NQ_OPEN = "nq-open"
    NUMERIC = "numeric"
    MULTIPLE_CHOICE = "multiple-choice"
    SHORT_ANSWER = "short-answer"


class GraderKind(StrEnum):
    """The answer spaces the supervisor knows how to mark."""

    AUTO = "auto"
    NUMERIC = "numeric"
    MULTIPLE_CHOICE = "multiple-choice"
    SHORT_ANSWER = "short-answer"


class PromptStyle(StrEnum):
    """`chat` for instruction-tuned models, `completion` for base models (few-shot text)."""

    CHAT = "chat"
    COMPLETION = "completion"


class TrainingMethod(StrEnum):
    KTO = "kto"
    DPO = "dpo"


class FieldMapping(_Model):
    """Which columns of a custom benchmark file hold what (generic formats only)."""

    id: str | None = Field(None, description="Column with a stable item id; row number if unset.")
    question: str = Field("question", description="Column with the question text.")
    answer: str = Field(
        "answer",
        description=(
            "Column with the gold answer: a number (numeric), a label or 0-based index "
            "(multiple-choice), or a string or list of accepted strings (short-answer)."
        ),
    )
    choices: str | None = Field(
        None, description="Column with the options (a list) for multiple-choice files."
    )
    labels: str | None = Field(
        None, description="Column with the option labels; A, B, C... when unset."
    )


class BenchmarkSpec(_Model):
    """The exam: where the questions and gold answers come from, and how many to ask."""

    format: BenchmarkFormat = Field(description="Row format; decides the default grader.")
    source: str = Field(
        description=(
            "A local JSONL, JSON, CSV or Parquet file (relative to the experiment file), an "
            "s3://bucket/key URI, or hf://owner/dataset for a Hugging Face dataset."
        ),
        min_length=1,
    )
    split: str | None = Field(None, description="Split of a Hugging Face dataset (hf:// only).")
    subset: str | None = Field(None, description="Configuration of a Hugging Face dataset.")
    fields: FieldMapping | None = Field(
        None, description="Column mapping; required for numeric, multiple-choice, short-answer."
    )
    limit: int | None = Field(
        None, ge=1, description="Ask at most this many items (after the seeded shuffle)."
    )
    seed: int = Field(0, ge=0, description="Seed for shuffling items and option order.")
    few_shot: int = Field(
        0, ge=0, le=16, description="Solved examples taken from the source and put in the prompt."
    )

    @model_validator(mode="after")
    def _generic_formats_need_fields(self) -> BenchmarkSpec:
        generic = {
            BenchmarkFormat.NUMERIC,
            BenchmarkFormat.MULTIPLE_CHOICE,
            BenchmarkFormat.SHORT_ANSWER,
        }
        if self.format in generic and self.fields is None:
            raise ValueError(f"format {self.format.value!r} needs `fields` naming the columns")
        if (
            self.format == BenchmarkFormat.MULTIPLE_CHOICE
            and self.fields
            and not self.fields.choices
        ):
            raise ValueError("format 'multiple-choice' needs `fields.choices`")
        if (self.split or self.subset) and not self.source.startswith("hf://"):
            raise ValueError("`split` and `subset` apply only to hf:// sources")
        return self


class Resources(_Model):
    """Where and how big a workload runs on Kubernetes (ignored by the local mode)."""

    gpus: int = Field(1, ge=0, description="nvidia.com/gpu requested and limited per pod.")
    cpu: str = Field("4", description="CPU request.")
    memory: str = Field("32Gi", description="Memory request and limit.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Pod tolerations, as in a PodSpec."
    )


class ServingSpec(_Model):
    """How vLLM serves a competitor."""

    max_model_len: int = Field(2048, ge=128, description="vLLM --max-model-len.")
    dtype: str = Field("auto", description="vLLM --dtype; the local CPU mode forces float32.")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM --tensor-parallel-size.")
    extra_args: list[str] = Field(default_factory=list, description="More vLLM arguments.")
    startup_timeout_seconds: int = Field(
        900, ge=30, description="How long the server may take to become ready."
    )
    resources: Resources = Field(default_factory=Resources)


class Competitor(_Model):
    """One of the two models that sit the exam."""

    model: str | None = Field(
        None,
        description=(
            "Model to serve: a local folder or .gguf file, package://<python-package>[/<file>] "
            "for a model shipped in a Python package, hf://owner/name, or s3://bucket/prefix."
        ),
    )
    endpoint: str | None = Field(
        None,
        description="Base URL of an existing OpenAI-compatible server (…/v1); nothing is launched.",
    )
    served_model_name: str | None = Field(
        None, description="Model name sent to the server; defaults to the served model's id."
    )
    parameters: int | None = Field(
        None,
        ge=1,
        description=(
            "Declared parameter count, used only when the model's own files cannot be read "
            "(an endpoint, a hub id offline). A count read from the files always wins."
        ),
    )
    prompt_style: PromptStyle = Field(PromptStyle.CHAT, description="chat or completion.")
    max_tokens: int = Field(256, ge=1, le=8192, description="Most tokens per answer.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    serving: ServingSpec = Field(default_factory=ServingSpec)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Competitor:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError("set exactly one of `model` (to launch) or `endpoint` (existing)")
        return self

    @property
    def identity(self) -> str:
        """What makes two competitors the same model."""
        return (self.model or self.endpoint or "").rstrip("/")


class Competitors(_Model):
    """Exactly two competitors of clearly different size: no ties, a clear signal."""

    large: Competitor
    small: Competitor

    @model_validator(mode="after")
    def _distinct(self) -> Competitors:
        if self.large.identity == self.small.identity and (
            self.large.served_model_name == self.small.served_model_name
        ):
            raise ValueError(
                f"both competitors are {self.large.identity!r}: the design needs two different "
                "models of different size"
            )
        if (
            self.large.parameters is not None
            and self.small.parameters is not None
            and self.large.parameters <= self.small.parameters
        ):
            raise ValueError(
                f"large declares {self.large.parameters} parameters and small "
                f"{self.small.parameters}: large must be strictly bigger"
            )
        return self

    def by_role(self, role: Role) -> Competitor:
        return self.large if role == Role.LARGE else self.small


class ExtractorSpec(_Model):
    """The optional supervisory LLM. It only maps an answer the rules could not parse onto the
    benchmark's answer space; the verdict is still computed by code against the gold answer."""

    competitor: Role | None = Field(
        None, description="Reuse this competitor's server as the extractor."
    )
    endpoint: str | None = Field(None, description="Base URL of an OpenAI-compatible server.")
    model: str | None = Field(None, description="Model name on that endpoint.")
    max_tokens: int = Field(16, ge=1, le=256)

    @model_validator(mode="after")
    def _one_server(self) -> ExtractorSpec:
        if (self.competitor is None) == (self.endpoint is None):
            raise ValueError("set exactly one of `competitor` or `endpoint` for the extractor")
        return self


class SupervisorSpec(_Model):
    """The exam marker: right or wrong against the gold answer, nothing else."""

    grader: GraderKind = Field(GraderKind.AUTO, description="auto picks it from the format.")
    numeric_tolerance: float = Field(
        1e-6, ge=0.0, description="Relative tolerance when comparing numbers."
    )
    extractor: ExtractorSpec | None = None
    concurrency: int = Field(8, ge=1, le=1024, description="Requests in flight per competitor.")
    request_timeout_seconds: float = Field(300.0, gt=0)
    retries: int = Field(2, ge=0, le=10, description="Retries of a failed request.")
    shards: int = Field(
        16, ge=1, le=4096, description="Record shards; the unit of resumption and of scale-out."
    )
    parallelism: int = Field(
        1, ge=1, le=256, description="Grading pods of the Indexed Job (Kubernetes)."
    )


class StorageSpec(_Model):
    """Where datasets, checkpoints and models go: a folder or an S3/MinIO prefix."""

    uri: str | None = Field(
        None,
        description="Folder or s3://bucket/prefix; default runs/<name>/store in the local mode.",
    )
    endpoint: str | None = Field(None, description="S3 endpoint host:port (MinIO); AWS when unset.")
    secure: bool = Field(True, description="Use TLS to reach the S3 endpoint.")
    region: str | None = None
    credentials_secret: str | None = Field(
        None,
        description=(
            "Secret with keys accessKey and secretKey (Kubernetes). Locally the credentials "
            "come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Never put keys in the spec."
        ),
    )

    @property
    def is_s3(self) -> bool:
        return bool(self.uri and self.uri.startswith("s3://"))


class LoraSpec(_Model):
    enabled: bool = False
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str = Field("all-linear", description="PEFT target_modules.")


class TrainingSpec(_Model):
    """TRL training of the target on the negative signals."""

    enabled: bool = True
    method: TrainingMethod = Field(TrainingMethod.KTO, description="kto (default) or dpo.")
    target: Role | None = Field(
        Role.SMALL, description="Train this competitor's model (default: the small one)."
    )
    target_model: str | None = Field(
        None, description="Or train this model (a folder, .gguf or package:// reference)."
    )
    max_steps: int = Field(20, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(5e-6, gt=0, lt=1)
    batch_size: int = Field(4, ge=1, description="Per-device batch size.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    beta: float = Field(0.1, gt=0, description="KTO/DPO beta: strength of the KL anchor.")
    desirable_weight: float | None = Field(
        None, gt=0, description="KTO weight of desirable examples (auto when unset)."
    )
    undesirable_weight: float | None = Field(
        None,
        gt=0,
        description=(
            "KTO weight of undesirable examples: loss aversion is undesirable/desirable. When "
            "unset, chosen so desirable*n_desirable : undesirable*n_undesirable is in [1, 4/3]."
        ),
    )
    max_length: int = Field(512, ge=32, description="Tokens per example, prompt included.")
    lora: LoraSpec = Field(default_factory=LoraSpec)
    seed: int = Field(0, ge=0)
    engine: Literal["job", "pytorchjob", "trainjob"] = Field(
        "job",
        description=(
            "Kubernetes: a Job (torchrun in one pod), or a Kubeflow PyTorchJob/TrainJob for "
            "multi-node runs when that operator is installed."
        ),
    )
    nodes: int = Field(1, ge=1, description="Nodes for pytorchjob/trainjob.")
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _one_target(self) -> TrainingSpec:
        if self.target_model is not None:
            self.target = None
        if self.target is None and self.target_model is None:
            raise ValueError("set `target` (large or small) or `targetModel`")
        if self.engine == "job" and self.nodes != 1:
            raise ValueError("`nodes` > 1 needs engine pytorchjob or trainjob")
        return self


class EvaluationSpec(_Model):
    """Held-out before/after grading of the target."""

    enabled: bool = True
    held_out_fraction: float = Field(
        0.25, ge=0.0, lt=1.0, description="Share of items kept out of the dataset, by id hash."
    )


class MetricsSpec(_Model):
    pushgateway: str | None = Field(
        None, description="Pushgateway URL that stage pods push to; /metrics otherwise."
    )


class KubernetesSpec(_Model):
    """Images and accounts for the in-cluster mode."""

    vllm_image: str = Field("vllm/vllm-openai:v0.11.0", description="Competitor server image.")
    runner_image: str = Field(
        "ghcr.io/prospect-dev/prospect-runner:0.1.0", description="Supervisor and writer image."
    )
    trainer_image: str = Field(
        "ghcr.io/prospect-dev/prospect-trainer:0.1.0", description="TRL trainer image."
    )
    models_pvc: str | None = Field(
        None, description="PVC mounted at /models for model paths and the HF cache."
    )
    hf_token_secret: str | None = Field(
        None, description="Secret with key token for gated Hugging Face models."
    )
    backoff_limit: int = Field(3, ge=0, le=20, description="Retries of each stage Job.")


class ExperimentSpec(_Model):
    benchmark: BenchmarkSpec
    competitors: Competitors
    supervisor: SupervisorSpec = Field(default_factory=SupervisorSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)

    @model_validator(mode="after")
    def _weights_are_kto_only(self) -> ExperimentSpec:
        training = self.training
        weighted = training.desirable_weight or training.undesirable_weight
        if training.enabled and training.method == TrainingMethod.DPO and weighted:
            raise ValueError("desirableWeight/undesirableWeight apply to kto only")
        return self

    def digest(self) -> str:
        """sha256 of the canonical spec: what makes two runs the same experiment."""
        canonical = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Metadata(_Model):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=_NAME_PATTERN)]
    namespace: str | None = None


class ProspectExperiment(_Model):
    """The whole resource, as `kubectl apply -f` and `prospect run` read it."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", validate_default=True
    )

    api_version: Literal["prospect.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ProspectExperiment"]
    metadata: Metadata
    spec: ExperimentSpec

    @property
    def name(self) -> str:
        return self.metadata.name
