"""The train stage: teach the target model from the supervisor's verdicts with TRL.

KTO (the default) reads unpaired examples, ``prompt``, ``completion``, ``label`` (True for a
desirable completion, False for an undesirable one), which is exactly what grading yields: a
verdict per answer, with no need to pair a right answer with a wrong one. DPO reads
``prompt``, ``chosen``, ``rejected`` pairs. Both train on prompt and completion strings
(TRL's standard format). The dataset's prompts are the competitors' prompt content; for a
target that is asked as a chat model (``chat=True``) each prompt is first wrapped in the
model's chat template, as the server wraps it, so it trains on the text it is evaluated on.

Loss aversion: KTO weighs desirable and undesirable losses separately. Unless the spec sets
both weights, :func:`kto_weights` chooses them so that
``desirable_weight * n_desirable : undesirable_weight * n_undesirable`` lies in [1, 4/3], the
range the KTO authors recommend.

The stage runs as one process (torchrun in a pod, or the local CLI). It saves the trained
model under ``<output_dir>/final`` in Hugging Face format, loadable without peft: a LoRA
adapter is merged into the base weights, and kept on its own under ``final/adapter``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prospect import metrics
from prospect.spec import TrainingMethod, TrainingSpec

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = [
    "KTO_COLUMNS",
    "PREFERENCE_COLUMNS",
    "RECOMMENDED_RATIO",
    "TrainResult",
    "TrainingError",
    "interleave",
    "kto_weights",
    "train",
]

log = logging.getLogger("prospect")

KTO_COLUMNS = ("prompt", "completion", "label")
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")

RECOMMENDED_RATIO = (1.0, 4.0 / 3.0)
"""The KTO authors' range for desirable_weight*n_desirable / (undesirable_weight*n_undesirable)."""

_T = TypeVar("_T")


class TrainingError(ValueError):
    """The stage cannot train on what it was given; the message names the file or field."""


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        method: "kto" or "dpo".
        steps: Optimizer steps taken.
        final_loss: Loss at the last logged step (None if nothing was logged).
        history: TRL's log history: one dict per logged step, then the run summary.
        desirable_weight: KTO weight of desirable examples (None for DPO).
        undesirable_weight: KTO weight of undesirable examples (None for DPO).
        n_desirable: Desirable examples (KTO) or preference pairs (DPO).
        n_undesirable: Undesirable examples (KTO) or preference pairs (DPO).
        model_dir: The trained model, loadable with AutoModelForCausalLM.from_pretrained.
        checkpoints_dir: Trainer checkpoints (optimizer state included).
        seconds: Wall time of the whole stage.
        adapter_dir: The LoRA adapter on its own, when LoRA was used.
        weights_reason: Why the KTO weights are what they are.
    """

    method: str
    steps: int
    final_loss: float | None
    history: list[dict[str, Any]]
    desirable_weight: float | None
    undesirable_weight: float | None
    n_desirable: int
    n_undesirable: int
    model_dir: Path
    checkpoints_dir: Path
    seconds: float
    adapter_dir: Path | None = None
    weights_reason: str = field(default="")


def kto_weights(
    n_desirable: int,
    n_undesirable: int,
    desirable_weight: float | None = None,
    undesirable_weight: float | None = None,
) -> tuple[float, float, str]:
    """Choose KTO's desirable and undesirable weights for a dataset's label counts.

    Both weights set: they are used as given (a warning is logged when their ratio falls
    outside the recommended range). One set: the other is chosen. None set: the side with
    more examples is down-weighted and the other keeps 1.0, so no weight exceeds 1 and the
    loss is never scaled up (which would act like a larger learning rate). In every chosen
    case the free weight is the value closest to 1.0 that puts
    ``desirable_weight * n_desirable / (undesirable_weight * n_undesirable)`` within
    [1, 4/3]: with 30 desirable and 10 undesirable examples that is desirable 0.444,
    undesirable 1.0; with 10 and 30 it is desirable 1.0, undesirable 0.333.

    With only one label present there is no ratio to balance and the weights default to 1.0.

    Returns:
        (desirable_weight, undesirable_weight, reason) where reason is a sentence for the log.

    Raises:
        ValueError: A count is negative or a given weight is not positive.
    """
    if n_desirable < 0 or n_undesirable < 0:
        raise ValueError(f"label counts must be >= 0, got {n_desirable} and {n_undesirable}")
    for given in (desirable_weight, undesirable_weight):
        if given is not None and not (given > 0 and math.isfinite(given)):
            raise ValueError(f"KTO weights must be positive and finite, got {given}")

    low, high = RECOMMENDED_RATIO
    counts = f"{n_desirable} desirable, {n_undesirable} undesirable"
    if desirable_weight is not None and undesirable_weight is not None:
        d, u, how = desirable_weight, undesirable_weight, "both set in the spec"
    elif n_desirable == 0 or n_undesirable == 0:
        d, u = desirable_weight or 1.0, undesirable_weight or 1.0
        return d, u, f"{counts}: only one label, nothing to balance"
    else:
        if desirable_weight is not None:
            d, how, free = desirable_weight, "desirable set, undesirable chosen", "u"
            mass = d * n_desirable / n_undesirable
            u = _closest_to_one(mass / high, mass / low)
        elif undesirable_weight is not None:
            u, how, free = undesirable_weight, "undesirable set, desirable chosen", "d"
            mass = u * n_undesirable / n_desirable
            d = _closest_to_one(mass * low, mass * high)
        elif n_desirable >= n_undesirable:
            share = n_undesirable / n_desirable
            u, d, free = 1.0, _closest_to_one(low * share, high * share), "d"
            how = "the counts are balanced already" if d == 1.0 else "desirable down-weighted"
        else:
            share = n_desirable / n_undesirable
            d, u, free = 1.0, _closest_to_one(share / high, share / low), "u"
            how = "undesirable down-weighted"
        d, u = _inside(d, u, n_desirable, n_undesirable, free=free)

    ratio = (d * n_desirable) / (u * n_undesirable)
    reason = (
        f"{counts}; {how}: desirable weight {d:.4g}, undesirable weight {u:.4g}, "
        f"desirable:undesirable = {ratio:.3f} (KTO recommends 1 to 4/3), "
        f"loss aversion (undesirable/desirable) = {u / d:.3g}"
    )
    return d, u, reason


def _inside(
    d: float, u: float, n_desirable: int, n_undesirable: int, *, free: str
) -> tuple[float, float]:
    """Move the free weight ("d" or "u") by a few ulps when float rounding has put
    d*n_desirable / (u*n_undesirable) a hair outside the recommended range."""
    low, high = RECOMMENDED_RATIO
    for _ in range(64):
        ratio = (d * n_desirable) / (u * n_undesirable)
        if low <= ratio <= high:
            break
        raise_ratio = ratio < low
        if free == "d":
            d = math.nextafter(d, math.inf if raise_ratio else 0.0)
        else:
            u = math.nextafter(u, 0.0 if raise_ratio else math.inf)
    return d, u


def _closest_to_one(low: float, high: float) -> float:
    return min(max(1.0, low), high)


def interleave(desirable: Sequence[_T], undesirable: Sequence[_T]) -> list[_T]:
    """Spread two labels evenly through one sequence, keeping each side's order.

    KTO reads its dataset in order (it estimates the KL term from neighbours in a batch), and
    a batch holding one label only cannot report the other label's rewards. Each position
    takes the side that is further behind its share, so 3 desirable and 9 undesirable come
    out as u d u u u d u u u d u u: every batch mixes both whenever the counts allow it.
    """
    out: list[_T] = []
    i = j = 0
    while i < len(desirable) or j < len(undesirable):
        take_desirable = j >= len(undesirable) or (
            i < len(desirable) and (i + 0.5) / len(desirable) <= (j + 0.5) / len(undesirable)
        )
        if take_desirable:
            out.append(desirable[i])
            i += 1
        else:
            out.append(undesirable[j])
            j += 1
    return out


def train(
    *,
    spec: TrainingSpec,
    model_path: Path,
    kto_path: Path | None,
    preferences_path: Path | None,
    output_dir: Path,
    experiment: str,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    chat: bool = False,
) -> TrainResult:
    """Train the model at `model_path` with KTO (or DPO when the spec says so).

    Args:
        spec: The experiment's training section.
        model_path: A Hugging Face folder with safetensors weights (see prospect.models).
        kto_path: The dataset's kto.parquet (prompt, completion, label); needed for KTO.
        preferences_path: preferences.parquet (prompt, chosen, rejected); needed for DPO.
        output_dir: Gets checkpoints/ and final/ (the trained model, tokenizer included).
        experiment: Label of the exported metrics and field of the log lines.
        on_log: Called with every logged step (TRL's keys plus "step").
        chat: The target is asked through its chat template (a `chat` competitor): each
            prompt is wrapped in that template, as the server wraps it, so the model is
            trained on the very text it is evaluated on.

    Raises:
        TrainingError: A dataset is missing, malformed, or lacks what the method needs
            (undesirable examples for KTO, pairs for DPO), or the batch is too small for KTO.
    """
    started = time.monotonic()
    fields = {"experiment": experiment, "stage": "train"}
    if spec.method == TrainingMethod.DPO:
        data = _dpo_data(preferences_path)
    else:
        data = _kto_data(spec, kto_path, fields)
    if not (model_path / "config.json").is_file():
        raise TrainingError(f"the model to train, {model_path}, is not a Hugging Face folder")

    if chat:
        data.rows = _as_chat(model_path, data.rows)
    _check_prompt_lengths(model_path, data.rows, spec.max_length, fields)
    _set_threads()
    checkpoints_dir = output_dir / "checkpoints"
    final_dir = output_dir / "final"
    trainer = _trainer(
        spec=spec,
        model_path=model_path,
        rows=data.rows,
        checkpoints_dir=checkpoints_dir,
        weights=data.weights,
        callback=_metrics_callback(experiment, on_log),
    )
    # Our callback logs one line per step; TRL's printer would print the same dict again.
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    log.info(
        "training %s with %s for %d steps (%s)",
        model_path,
        spec.method.value,
        spec.max_steps,
        "LoRA" if spec.lora.enabled else "all weights",
        extra=fields,
    )
    output = trainer.train()
    if trainer.state.global_step == 0:
        raise TrainingError(
            f"training took no step: no batch of {spec.batch_size} examples could be formed "
            "from the dataset; lower spec.training.batchSize or grade more items"
        )
    adapter_dir = _save(trainer, final_dir, lora=spec.lora.enabled)

    history = list(trainer.state.log_history)
    losses = [entry["loss"] for entry in history if "loss" in entry]
    result = TrainResult(
        method=spec.method.value,
        steps=trainer.state.global_step,
        final_loss=losses[-1] if losses else None,
        history=history,
        desirable_weight=data.weights[0] if data.weights else None,
        undesirable_weight=data.weights[1] if data.weights else None,
        n_desirable=data.n_desirable,
        n_undesirable=data.n_undesirable,
        model_dir=final_dir,
        checkpoints_dir=checkpoints_dir,
        seconds=time.monotonic() - started,
        adapter_dir=adapter_dir,
        weights_reason=data.reason,
    )
    log.info(
        "trained %d steps in %.1f s (training loss %.4f); model saved to %s",
        result.steps,
        result.seconds,
        output.training_loss,
        final_dir,
        extra=fields,
    )
    return result


def _as_chat(model_path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompts wrapped in the model's chat template as one user turn, with the assistant's
    turn opened, exactly as an OpenAI-compatible server renders a chat request."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if not tokenizer.chat_template:
        raise TrainingError(
            f"the target at {model_path} is asked as a chat model but has no chat template; "
            "set its promptStyle to completion"
        )
    wrapped: dict[str, str] = {}
    out = []
    for row in rows:
        prompt = row["prompt"]
        if prompt not in wrapped:
            wrapped[prompt] = str(
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
            )
        out.append({**row, "prompt": wrapped[prompt]})
    return out


def _check_prompt_lengths(
    model_path: Path, rows: list[dict[str, Any]], max_length: int, fields: dict[str, str]
) -> None:
    """Refuse, before any model loads, a dataset whose prompts fill `max_length`.

    TRL keeps the start of a sequence and drops every example whose prompt alone reaches
    `max_length`: with long few-shot prompts that can be every example, and training would
    silently take no step.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    lengths = [len(ids) for ids in tokenizer([row["prompt"] for row in rows])["input_ids"]]
    kept = sum(1 for n in lengths if n < max_length)
    if kept == 0:
        raise TrainingError(
            f"every prompt is at least spec.training.maxLength = {max_length} tokens long "
            f"(shortest {min(lengths)}, longest {max(lengths)}), so TRL would drop every "
            f"example; set maxLength above {max(lengths)} plus room for the answer"
        )
    if kept < len(lengths):
        log.warning(
            "%d of %d examples have prompts of %d tokens or more and will be dropped by TRL; "
            "raise spec.training.maxLength to keep them",
            len(lengths) - kept,
            len(lengths),
            max_length,
            extra=fields,
        )


# Datasets.


@dataclass
class _Data:
    rows: list[dict[str, Any]]
    n_desirable: int
    n_undesirable: int
    weights: tuple[float, float] | None  # KTO's (desirable, undesirable); None for DPO
    reason: str


def _dpo_data(path: Path | None) -> _Data:
    if path is None:
        raise TrainingError("training.method is dpo but no preferences dataset was given")
    rows = _read_rows(path, PREFERENCE_COLUMNS, "preference dataset")
    if not rows:
        raise TrainingError(
            f"{path} holds no preference pairs: DPO needs at least one pair of a chosen and a "
            "rejected completion (method kto needs no pairs)"
        )
    return _Data(rows, len(rows), len(rows), None, f"{len(rows)} preference pairs")


def _kto_data(spec: TrainingSpec, path: Path | None, fields: dict[str, str]) -> _Data:
    """Read, weigh and order the KTO examples."""
    if path is None:
        raise TrainingError("training.method is kto but no KTO dataset was given")
    if spec.batch_size < 2:
        raise TrainingError(
            "training.batchSize is 1, but KTO estimates its KL term from the other examples "
            "in a batch and needs a batch size of at least 2"
        )
    desirable, undesirable = _read_kto(path)
    n_desirable, n_undesirable = len(desirable), len(undesirable)

    d, u, reason = kto_weights(
        n_desirable, n_undesirable, spec.desirable_weight, spec.undesirable_weight
    )
    log.info("KTO loss aversion: %s", reason, extra=fields)
    low, high = RECOMMENDED_RATIO
    ratio = d * n_desirable / (u * n_undesirable)
    if n_desirable and not low * (1 - 1e-6) <= ratio <= high * (1 + 1e-6):
        log.warning(
            "the KTO weights put desirable:undesirable at %.3f, outside the recommended 1 to 4/3",
            ratio,
            extra=fields,
        )

    rows = interleave(_shuffled(desirable, spec.seed), _shuffled(undesirable, spec.seed + 1))
    return _Data(rows, n_desirable, n_undesirable, (d, u), reason)


def _read_rows(path: Path, columns: tuple[str, ...], what: str) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise TrainingError(f"{what} {path} does not exist")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise TrainingError(f"{what} {path} is not a readable Parquet file: {exc}") from None
    missing = [name for name in columns if name not in table.column_names]
    if missing:
        raise TrainingError(
            f"{what} {path} lacks column(s) {', '.join(missing)}: expected "
            f"{', '.join(columns)}, found {', '.join(table.column_names) or 'none'}"
        )
    rows = table.select(list(columns)).to_pylist()
    for number, row in enumerate(rows, start=1):
        for name in columns:
            if name == "label":
                continue
            if not isinstance(row[name], str) or (name == "prompt" and not row[name]):
                raise TrainingError(
                    f"{path} row {number}: column {name!r} must be a non-empty string, "
                    f"found {row[name]!r}"
                )
    return rows


def _read_kto(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = _read_rows(path, KTO_COLUMNS, "KTO dataset")
    for number, row in enumerate(rows, start=1):
        label = row["label"]
        if label in (0, 1) and not isinstance(label, float):
            row["label"] = bool(label)
        else:
            raise TrainingError(
                f"{path} row {number}: label must be true (desirable) or false (undesirable), "
                f"found {label!r}"
            )
    desirable = [row for row in rows if row["label"]]
    undesirable = [row for row in rows if not row["label"]]
    if not undesirable:
        raise TrainingError(
            f"{path} holds {len(desirable)} desirable and no undesirable examples: KTO here "
            "learns from incorrect answers, so the dataset needs at least one row with "
            "label false (did the competitors answer everything correctly?)"
        )
    if not desirable:
        log.warning("%s holds no desirable examples; KTO trains on undesirable ones only", path)
    return desirable, undesirable


def _shuffled(rows: list[_T], seed: int) -> list[_T]:
    import random

    out = list(rows)
    random.Random(seed).shuffle(out)
    return out


def _dataset(rows: list[dict[str, Any]]) -> Dataset:
    from datasets import Dataset

    columns = list(rows[0]) if rows else []
    return Dataset.from_dict({name: [row[name] for row in rows] for name in columns})


# Trainer.


def _set_threads() -> None:
    import torch

    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def _trainer(
    *,
    spec: TrainingSpec,
    model_path: Path,
    rows: list[dict[str, Any]],
    checkpoints_dir: Path,
    weights: tuple[float, float] | None,
    callback: Any,
) -> Any:
    """A KTOTrainer, or a DPOTrainer when `weights` (KTO's desirable and undesirable) is None."""
    import torch
    from transformers import AutoTokenizer

    cuda = torch.cuda.is_available()
    # TRL defaults to bf16 and gradient checkpointing, both made for GPUs; on a CPU bf16 is
    # slow or unsupported and checkpointing only trades time for memory a small model has.
    common: dict[str, Any] = {
        "output_dir": str(checkpoints_dir),
        "max_steps": spec.max_steps,
        "per_device_train_batch_size": spec.batch_size,
        "gradient_accumulation_steps": spec.gradient_accumulation_steps,
        "learning_rate": spec.learning_rate,
        "beta": spec.beta,
        "max_length": spec.max_length,
        "seed": spec.seed,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": spec.max_steps,
        "save_total_limit": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "fp16": False,
        "gradient_checkpointing": cuda,
        "use_cpu": not cuda,
        "model_init_kwargs": {"dtype": torch.float32},
    }
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    peft_config = _lora_config(spec) if spec.lora.enabled else None
    dataset = _dataset(rows)

    if weights is None:
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer(
            model=str(model_path),
            args=DPOConfig(**common),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[callback],
        )

    from trl import KTOConfig, KTOTrainer

    config = KTOConfig(
        **common,
        desirable_weight=weights[0],
        undesirable_weight=weights[1],
        # The interleaved order is what mixes both labels in each batch (and KTO requires it).
        train_sampling_strategy="sequential",
    )
    return KTOTrainer(
        model=str(model_path),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback],
    )


def _lora_config(spec: TrainingSpec) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=spec.lora.target_modules,
        task_type="CAUSAL_LM",
    )


def _save(trainer: Any, final_dir: Path, *, lora: bool) -> Path | None:
    """Save the model where vLLM and the evaluation can load it without peft."""
    tokenizer = trainer.processing_class
    if not lora:
        trainer.save_model(str(final_dir))
        return None

    adapter_dir = final_dir / "adapter"
    trainer.model.save_pretrained(str(adapter_dir))
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    return adapter_dir


def _metrics_callback(experiment: str, on_log: Callable[[dict[str, Any]], None] | None) -> Any:
    """A TrainerCallback mirroring each logged step into the Prometheus gauges and `on_log`."""
    from transformers import TrainerCallback

    class StepReporter(TrainerCallback):
        def __init__(self) -> None:
            self.last = (time.monotonic(), 0.0)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.last = (time.monotonic(), 0.0)

        def on_log(
            self,
            args: Any,
            state: Any,
            control: Any,
            logs: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            if not logs or "loss" not in logs:
                return  # the run summary, not a step
            record = {"step": state.global_step, **logs}
            rate = self._tokens_per_second(logs.get("num_tokens"))
            if rate is not None:
                record["tokens_per_second"] = rate
            _export(experiment, record)
            log.info(
                "step %d/%d: loss %.4f, reward chosen %s, rejected %s",
                state.global_step,
                state.max_steps,
                logs["loss"],
                _number(logs.get("rewards/chosen")),
                _number(logs.get("rewards/rejected")),
                extra={"experiment": experiment, "stage": "train"},
            )
            if on_log is not None:
                on_log(record)

        def _tokens_per_second(self, tokens: float | None) -> float | None:
            # TRL logs a running total of the tokens seen; the rate is its growth per second.
            if tokens is None:
                return None
            now = time.monotonic()
            then, before = self.last
            self.last = (now, float(tokens))
            if now <= then or tokens <= before:
                return None
            return (tokens - before) / (now - then)

    return StepReporter()


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _export(experiment: str, record: dict[str, Any]) -> None:
    metrics.training_step.labels(experiment).set(record["step"])
    metrics.training_loss.labels(experiment).set(record["loss"])
    chosen, rejected = record.get("rewards/chosen"), record.get("rewards/rejected")
    if chosen is not None:
        metrics.training_rewards.labels(experiment, "chosen").set(chosen)
    if rejected is not None:
        metrics.training_rewards.labels(experiment, "rejected").set(rejected)
    margin = record.get("rewards/margins")
    if margin is None and chosen is not None and rejected is not None:
        margin = chosen - rejected
    if margin is not None:
        metrics.training_reward_margin.labels(experiment).set(margin)
    if "kl" in record:
        metrics.training_kl.labels(experiment).set(record["kl"])
    if "learning_rate" in record:
        metrics.training_learning_rate.labels(experiment).set(record["learning_rate"])
    if "tokens_per_second" in record:
        metrics.training_tokens_per_second.labels(experiment).set(record["tokens_per_second"])
