"""The train stage runs real KTO and DPO steps on SmolLM2-135M with GSM8K examples.

The desirable completions are GSM8K's own gold solutions; the undesirable ones keep the
solution's working but end on a wrong number, the way a small competitor gets it wrong.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open

from prospect import metrics
from prospect.spec import TrainingSpec
from prospect.stages.train import (
    RECOMMENDED_RATIO,
    TrainingError,
    TrainResult,
    interleave,
    kto_weights,
    train,
)

GSM8K = Path(__file__).resolve().parents[2] / "examples" / "benchmarks" / "gsm8k" / "test.jsonl"
LOW, HIGH = RECOMMENDED_RATIO


@pytest.fixture(scope="session")
def smollm2_folder(smollm2: Any) -> Path:
    return Path(smollm2.path)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kto.parquet: 4 gold solutions and 8 wrong answers; preferences.parquet: 4 pairs."""
    folder = tmp_path_factory.mktemp("dataset")
    with GSM8K.open() as lines:
        rows = [json.loads(next(lines)) for _ in range(8)]

    kto, pairs = [], []
    for number, row in enumerate(rows):
        prompt = f"Question: {row['question']}\nAnswer:"
        working, _, gold = row["answer"].rpartition("####")
        wrong = f" {working.strip()}\n#### {int(gold.replace(',', '')) + 7}"
        kto.append({"prompt": prompt, "completion": wrong, "label": False})
        if number < 4:
            kto.append({"prompt": prompt, "completion": f" {row['answer']}", "label": True})
            pairs.append({"prompt": prompt, "chosen": f" {row['answer']}", "rejected": wrong})

    pq.write_table(pa.Table.from_pylist(kto), folder / "kto.parquet")
    pq.write_table(pa.Table.from_pylist(pairs), folder / "preferences.parquet")
    desirable_only = [row for row in kto if row["label"]]
    pq.write_table(pa.Table.from_pylist(desirable_only), folder / "desirable-only.parquet")
    schema = pa.schema(
        [("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string())]
    )
    pq.write_table(schema.empty_table(), folder / "no-pairs.parquet")
    return folder


def spec(**overrides: Any) -> TrainingSpec:
    settings: dict[str, Any] = {
        "max_steps": 2,
        "batch_size": 3,
        "max_length": 128,
        "learning_rate": 1e-5,
    }
    return TrainingSpec(**(settings | overrides))


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def kto_run(
    smollm2_folder: Path, data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One KTO run of two steps, its logs and its on_log calls, shared by the tests below."""
    logger = logging.getLogger("prospect")
    recorder, level = Recorder(), logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.DEBUG)
    steps: list[dict[str, Any]] = []
    try:
        result = train(
            spec=spec(),
            model_path=smollm2_folder,
            kto_path=data / "kto.parquet",
            preferences_path=None,
            output_dir=tmp_path_factory.mktemp("kto"),
            experiment="kto-test",
            on_log=steps.append,
        )
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
    yield result, recorder.records, steps
    shutil.rmtree(result.model_dir.parent, ignore_errors=True)


@pytest.fixture
def output_dir(tmp_path: Path) -> Iterator[Path]:
    """Where a run writes; removed afterwards, as checkpoints hold a gigabyte of optimizer state."""
    yield tmp_path / "run"
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def changed_tensors(base: Path, trained: Path) -> list[str]:
    with (
        safe_open(str(base / "model.safetensors"), "pt") as before,
        safe_open(str(trained / "model.safetensors"), "pt") as after,
    ):
        names = before.keys()
        assert set(names) == set(after.keys())
        return [k for k in names if not torch.equal(before.get_tensor(k), after.get_tensor(k))]


def generates(model_dir: Path) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    inputs = tokenizer("Question: What is 2 + 3?\nAnswer:", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])


# KTO.


@pytest.mark.slow
def test_kto_saves_a_trained_model_that_loads_and_generates(
    kto_run: Any, smollm2_folder: Path
) -> None:
    result: TrainResult = kto_run[0]
    assert result.method == "kto"
    assert result.steps == 2
    assert result.final_loss is not None and math.isfinite(result.final_loss)
    assert result.model_dir.name == "final"
    assert (result.checkpoints_dir / "checkpoint-2").is_dir()
    assert changed_tensors(smollm2_folder, result.model_dir)
    assert generates(result.model_dir)


@pytest.mark.slow
def test_kto_balances_4_desirable_against_8_undesirable_and_logs_why(kto_run: Any) -> None:
    result, records, _ = kto_run
    assert (result.n_desirable, result.n_undesirable) == (4, 8)
    assert (result.desirable_weight, result.undesirable_weight) == (1.0, 0.5)
    ratio = result.desirable_weight * 4 / (result.undesirable_weight * 8)
    assert LOW <= ratio <= HIGH

    messages = [r.getMessage() for r in records if r.levelno == logging.INFO]
    aversion = [m for m in messages if m.startswith("KTO loss aversion")]
    assert len(aversion) == 1
    assert "desirable:undesirable = 1.000" in aversion[0]
    assert "undesirable weight 0.5" in aversion[0]


@pytest.mark.slow
def test_every_kto_batch_holds_both_labels(kto_run: Any) -> None:
    result, _, _ = kto_run
    steps = [entry for entry in result.history if "loss" in entry]
    assert len(steps) == 2
    for entry in steps:
        assert "rewards/chosen" in entry and "rewards/rejected" in entry, entry


@pytest.mark.slow
def test_each_kto_step_reaches_on_log_and_the_metrics(kto_run: Any) -> None:
    result, _, steps = kto_run
    assert [step["step"] for step in steps] == [1, 2]

    def value(name: str, **labels: str) -> float | None:
        return metrics.REGISTRY.get_sample_value(name, {"experiment": "kto-test", **labels})

    assert value("prospect_training_step") == 2
    assert value("prospect_training_loss") == pytest.approx(result.final_loss)
    assert value("prospect_training_rewards", side="chosen") == pytest.approx(
        steps[-1]["rewards/chosen"]
    )
    assert value("prospect_training_rewards", side="rejected") == pytest.approx(
        steps[-1]["rewards/rejected"]
    )
    assert value("prospect_training_reward_margin") == pytest.approx(steps[-1]["rewards/margins"])
    assert value("prospect_training_kl") is not None
    assert value("prospect_training_learning_rate") == pytest.approx(steps[-1]["learning_rate"])
    assert (value("prospect_training_tokens_per_second") or 0) > 0


@pytest.mark.slow
def test_explicit_kto_weights_reach_trl_as_given(
    smollm2_folder: Path, data: Path, output_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prospect")
    result = train(
        spec=spec(max_steps=1, desirable_weight=1.0, undesirable_weight=1.5),
        model_path=smollm2_folder,
        kto_path=data / "kto.parquet",
        preferences_path=None,
        output_dir=output_dir,
        experiment="weights-test",
    )
    assert (result.desirable_weight, result.undesirable_weight) == (1.0, 1.5)
    args = torch.load(result.model_dir / "training_args.bin", weights_only=False)
    assert (args.desirable_weight, args.undesirable_weight) == (1.0, 1.5)
    assert "both set in the spec" in caplog.text
    assert any(
        r.levelno == logging.WARNING and "outside the recommended" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.slow
def test_lora_kto_saves_a_merged_model_that_loads_without_peft(
    smollm2_folder: Path, data: Path, output_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM

    result = train(
        spec=spec(learning_rate=1e-4, lora={"enabled": True, "r": 8, "alpha": 16}),
        model_path=smollm2_folder,
        kto_path=data / "kto.parquet",
        preferences_path=None,
        output_dir=output_dir,
        experiment="lora-test",
    )
    assert result.adapter_dir == result.model_dir / "adapter"
    assert (result.adapter_dir / "adapter_config.json").is_file()
    # transformers would load an adapter found beside the weights; the merged model has none.
    assert not (result.model_dir / "adapter_config.json").exists()

    changed = changed_tensors(smollm2_folder, result.model_dir)
    assert changed and all(name.endswith("proj.weight") for name in changed)
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert generates(result.model_dir)


# DPO.


@pytest.mark.slow
def test_dpo_trains_two_steps_on_preference_pairs(
    smollm2_folder: Path, data: Path, output_dir: Path
) -> None:
    result = train(
        spec=spec(method="dpo", batch_size=2),
        model_path=smollm2_folder,
        kto_path=None,
        preferences_path=data / "preferences.parquet",
        output_dir=output_dir,
        experiment="dpo-test",
    )
    assert (result.method, result.steps) == ("dpo", 2)
    assert (result.n_desirable, result.n_undesirable) == (4, 4)
    assert result.desirable_weight is None and result.undesirable_weight is None
    assert all("rewards/margins" in entry for entry in result.history if "loss" in entry)
    assert changed_tensors(smollm2_folder, result.model_dir)
    assert generates(result.model_dir)


# Refusals, before any model is loaded.


def test_a_kto_dataset_without_undesirable_examples_is_refused(data: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no undesirable examples") as raised:
        train(
            spec=spec(),
            model_path=tmp_path / "never-loaded",
            kto_path=data / "desirable-only.parquet",
            preferences_path=None,
            output_dir=tmp_path,
            experiment="refusal-test",
        )
    assert "desirable-only.parquet" in str(raised.value)


def test_a_dpo_dataset_without_pairs_is_refused(data: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no preference pairs"):
        train(
            spec=spec(method="dpo"),
            model_path=tmp_path / "never-loaded",
            kto_path=None,
            preferences_path=data / "no-pairs.parquet",
            output_dir=tmp_path,
            experiment="refusal-test",
        )


def test_kto_refuses_a_batch_of_one(data: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="batchSize is 1"):
        train(
            spec=spec(batch_size=1),
            model_path=tmp_path / "never-loaded",
            kto_path=data / "kto.parquet",
            preferences_path=None,
            output_dir=tmp_path,
            experiment="refusal-test",
        )


def test_a_model_path_that_is_not_a_model_folder_is_refused(data: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="not a Hugging Face folder"):
        train(
            spec=spec(),
            model_path=tmp_path / "no-model-here",
            kto_path=data / "kto.parquet",
            preferences_path=None,
            output_dir=tmp_path,
            experiment="refusal-test",
        )


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([{"prompt": "Q", "response": "A", "label": False}])
    pq.write_table(table, tmp_path / "kto.parquet")
    with pytest.raises(TrainingError, match="lacks column\\(s\\) completion"):
        train(
            spec=spec(),
            model_path=tmp_path / "never-loaded",
            kto_path=tmp_path / "kto.parquet",
            preferences_path=None,
            output_dir=tmp_path,
            experiment="refusal-test",
        )


def test_a_label_that_is_not_a_boolean_is_named_with_its_row(tmp_path: Path) -> None:
    rows = [{"prompt": "Q", "completion": "A", "label": "no"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "kto.parquet")
    with pytest.raises(TrainingError, match="row 1: label must be true"):
        train(
            spec=spec(),
            model_path=tmp_path / "never-loaded",
            kto_path=tmp_path / "kto.parquet",
            preferences_path=None,
            output_dir=tmp_path,
            experiment="refusal-test",
        )


# Loss aversion and ordering, as properties.

counts = st.integers(min_value=1, max_value=10**6)
weights = st.floats(min_value=1e-3, max_value=1e3)


@given(n_desirable=counts, n_undesirable=counts)
def test_auto_weights_put_the_ratio_within_1_to_4_3_without_exceeding_1(
    n_desirable: int, n_undesirable: int
) -> None:
    d, u, reason = kto_weights(n_desirable, n_undesirable)
    assert LOW <= (d * n_desirable) / (u * n_undesirable) <= HIGH
    assert 0 < d <= 1 and 0 < u <= 1
    assert max(d, u) == 1.0
    assert f"{n_desirable} desirable" in reason


@given(n_desirable=counts, n_undesirable=counts, weight=weights, fixed=st.sampled_from("du"))
def test_one_given_weight_is_kept_and_the_other_fits_the_ratio(
    n_desirable: int, n_undesirable: int, weight: float, fixed: str
) -> None:
    if fixed == "d":
        d, u, _ = kto_weights(n_desirable, n_undesirable, desirable_weight=weight)
        assert d == weight
    else:
        d, u, _ = kto_weights(n_desirable, n_undesirable, undesirable_weight=weight)
        assert u == weight
    assert LOW <= (d * n_desirable) / (u * n_undesirable) <= HIGH


@given(n_desirable=counts, n_undesirable=counts, d=weights, u=weights)
def test_two_given_weights_are_used_as_they_are(
    n_desirable: int, n_undesirable: int, d: float, u: float
) -> None:
    assert kto_weights(n_desirable, n_undesirable, d, u)[:2] == (d, u)


def test_weights_for_one_label_only_stay_at_one() -> None:
    assert kto_weights(0, 5)[:2] == (1.0, 1.0)
    assert kto_weights(5, 0)[:2] == (1.0, 1.0)


def test_kto_weights_refuse_impossible_input() -> None:
    with pytest.raises(ValueError, match="counts"):
        kto_weights(-1, 3)
    with pytest.raises(ValueError, match="positive"):
        kto_weights(1, 3, desirable_weight=0.0)


@given(n_desirable=st.integers(0, 200), n_undesirable=st.integers(0, 200))
def test_interleaving_keeps_every_example_and_spreads_the_minority(
    n_desirable: int, n_undesirable: int
) -> None:
    desirable = [("d", i) for i in range(n_desirable)]
    undesirable = [("u", i) for i in range(n_undesirable)]
    mixed = interleave(desirable, undesirable)

    assert [x for x in mixed if x[0] == "d"] == desirable
    assert [x for x in mixed if x[0] == "u"] == undesirable
    if n_desirable and n_undesirable:
        minority = "d" if n_desirable <= n_undesirable else "u"
        most, least = max(n_desirable, n_undesirable), min(n_desirable, n_undesirable)
        window = math.ceil(most / least) + 1
        # Every run of `window` consecutive examples holds at least one of the minority.
        for start in range(len(mixed) - window + 1):
            assert any(x[0] == minority for x in mixed[start : start + window])


@pytest.mark.slow
def test_a_chat_target_trains_on_prompts_wrapped_as_its_server_wraps_them(
    smollm2_folder: Path,
) -> None:
    from transformers import AutoTokenizer

    from prospect.stages.train import _as_chat

    rows = [{"prompt": "Question: 2 + 2?\nAnswer:", "completion": " 4", "label": True}]
    wrapped = _as_chat(smollm2_folder, rows)

    expected = AutoTokenizer.from_pretrained(smollm2_folder).apply_chat_template(
        [{"role": "user", "content": rows[0]["prompt"]}], tokenize=False, add_generation_prompt=True
    )
    assert wrapped[0]["prompt"] == expected
    assert wrapped[0]["prompt"].rstrip().endswith("assistant")
    assert wrapped[0]["completion"] == " 4"
