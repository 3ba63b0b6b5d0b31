"""Metrics travel from a stage to Prometheus: pushed to a Pushgateway, or scraped from a port.

A real Prometheus and Pushgateway run for these tests (tests/fixtures/prometheus.py); every
assertion reads the value back through Prometheus' HTTP API, as a Grafana panel would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.prometheus import Prometheus, Pushgateway, free_port
from prospect import metrics
from prospect.records import BenchmarkItem, Extraction, GradedRecord, Split, Verdict
from prospect.stages.write import write_dataset
from prospect.storage import DirStore

Samples = dict[frozenset[tuple[str, str]], float]


def by(label: str, *more: str) -> Callable[[Samples], dict[tuple[str, ...], float]]:
    """Samples keyed by the values of some labels."""
    names = (label, *more)

    def key(samples: Samples) -> dict[tuple[str, ...], float]:
        return {tuple(dict(labels)[n] for n in names): value for labels, value in samples.items()}

    return key


def grouping(experiment: str, stage: str) -> dict[str, str]:
    """The grouping key prospect.runner pushes a stage's metrics under."""
    return {"experiment": experiment, "stage": stage}


def count_answer(experiment: str, role: str, verdict: Verdict, *, tokens: int = 40) -> None:
    """What the grade stage records for each answer the supervisor marks."""
    metrics.answers_graded_total.labels(experiment, role, verdict.value).inc()
    if verdict is Verdict.UNPARSEABLE:
        metrics.unparseable_answers_total.labels(experiment, role).inc()
    metrics.request_duration_seconds.labels(experiment, role).observe(0.8)
    metrics.tokens_total.labels(experiment, role, "prompt").inc(tokens)
    metrics.tokens_total.labels(experiment, role, "completion").inc(tokens // 2)


@pytest.mark.usefixtures("fresh_registry")
def test_grading_metrics_pushed_by_a_stage_are_queryable_in_prometheus(
    prometheus: Prometheus, pushgateway: Pushgateway
) -> None:
    experiment = "flow-grading"
    metrics.items_total.labels(experiment).set(4)
    verdicts = {
        "large": [Verdict.CORRECT, Verdict.CORRECT, Verdict.CORRECT, Verdict.INCORRECT],
        "small": [Verdict.CORRECT, Verdict.INCORRECT, Verdict.UNPARSEABLE, Verdict.INCORRECT],
    }
    for role, marks in verdicts.items():
        for verdict in marks:
            count_answer(experiment, role, verdict)
        correct = sum(verdict is Verdict.CORRECT for verdict in marks)
        metrics.accuracy_ratio.labels(experiment, role).set(correct / len(marks))
    metrics.request_errors_total.labels(experiment, "small").inc()

    metrics.push(pushgateway.address, job="prospect-stage", grouping=grouping(experiment, "grade"))

    graded = prometheus.wait_for(
        f'sum by (role, verdict) (prospect_answers_graded_total{{experiment="{experiment}"}})',
        lambda samples: len(samples) == 5,
    )
    assert by("role", "verdict")(graded) == {
        ("large", "correct"): 3,
        ("large", "incorrect"): 1,
        ("small", "correct"): 1,
        ("small", "incorrect"): 2,
        ("small", "unparseable"): 1,
    }
    accuracy = prometheus.samples(f'prospect_accuracy_ratio{{experiment="{experiment}"}}')
    assert by("role")(accuracy) == {("large",): 0.75, ("small",): 0.25}
    # The Pushgateway's grouping key says which stage of which experiment pushed a series.
    large = next(dict(labels) for labels in accuracy if dict(labels)["role"] == "large")
    assert (large["job"], large["stage"]) == ("prospect-stage", "grade")

    latency = prometheus.samples(
        f'sum by (role) (prospect_request_duration_seconds_count{{experiment="{experiment}"}})'
    )
    assert by("role")(latency) == {("large",): 4, ("small",): 4}
    tokens = prometheus.samples(
        f'sum by (direction) (prospect_tokens_total{{experiment="{experiment}"}})'
    )
    assert by("direction")(tokens) == {("prompt",): 320, ("completion",): 160}
    assert prometheus.samples(f'prospect_items{{experiment="{experiment}"}}') != {}
    unparseable = prometheus.samples(
        f'prospect_unparseable_answers_total{{experiment="{experiment}"}}'
    )
    assert by("role")(unparseable) == {("small",): 1}


def _item(number: int) -> BenchmarkItem:
    return BenchmarkItem(
        id=f"item-{number}",
        question=f"What is {number} + {number}?",
        gold=str(2 * number),
        kind="numeric",
        reference=f"{number} + {number} = {2 * number}.\n#### {2 * number}",
        source_row=number,
        split=Split.TRAIN,
    )


def _answer(item: BenchmarkItem, role: str, verdict: Verdict) -> GradedRecord:
    said = item.gold if verdict is Verdict.CORRECT else str(int(item.gold) + 1)
    return GradedRecord(
        item_id=item.id,
        role=role,
        model=f"{role}-model",
        split=item.split,
        prompt=f"Problem: {item.question}\nSolution:",
        response=f"The answer is {said}.",
        extracted=said,
        gold=item.gold,
        verdict=verdict,
        extraction=Extraction.RULE,
    )


@pytest.mark.usefixtures("fresh_registry")
def test_the_dataset_writers_counts_reach_prometheus(
    prometheus: Prometheus, pushgateway: Pushgateway, tmp_path: Path
) -> None:
    experiment = "flow-dataset"
    items = [_item(number) for number in range(1, 6)]
    right, wrong = Verdict.CORRECT, Verdict.INCORRECT
    table = [(right, wrong), (right, right), (wrong, wrong), (right, wrong), (wrong, right)]
    records = [
        _answer(item, role, verdict)
        for item, verdicts in zip(items, table, strict=True)
        for role, verdict in zip(("large", "small"), verdicts, strict=True)
    ]

    with metrics.pushing(
        pushgateway.address, job="prospect-stage", grouping=grouping(experiment, "write")
    ):
        manifest = write_dataset(
            store=DirStore(tmp_path / "store"),
            experiment=experiment,
            spec_digest="a" * 64,
            benchmark_digest="b" * 64,
            records=records,
            items=items,
        )

    kept = prometheus.wait_for(
        f'prospect_incorrect_answers_kept{{experiment="{experiment}"}}', lambda s: bool(s)
    )
    assert list(kept.values()) == [sum(manifest.counts["incorrect"].values())] == [5]
    kto = prometheus.samples(f'prospect_kto_examples{{experiment="{experiment}"}}')
    assert by("label")(kto) == {(label,): count for label, count in manifest.counts["kto"].items()}
    pairs = prometheus.samples(f'prospect_preference_pairs{{experiment="{experiment}"}}')
    assert by("kind")(pairs) == {
        (kind,): count for kind, count in manifest.counts["preferences"].items()
    }
    written = prometheus.samples(
        f'prospect_dataset_bytes_written_total{{experiment="{experiment}"}}'
    )
    files = sum(entry.bytes for entry in manifest.files.values())
    assert list(written.values()) == [
        metrics.REGISTRY.get_sample_value(
            "prospect_dataset_bytes_written_total", {"experiment": experiment}
        )
    ]
    assert next(iter(written.values())) > files


def tiny_causal_lm(folder: Path, texts: list[str]) -> Path:
    """A randomly initialised one-layer Llama with a word-level tokenizer over `texts`: a model
    folder as the trainer reads it, that trains in a second on a CPU."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "</s>", "<s>"]
    words = sorted({word for text in texts for word in text.split()})
    vocabulary = {token: index for index, token in enumerate([*specials, *words])}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
    ).save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(vocabulary),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=1,
        eos_token_id=2,
        bos_token_id=3,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.usefixtures("fresh_registry")
def test_a_training_stage_that_serves_its_metrics_is_scraped(
    prometheus: Prometheus, metrics_port: int, tmp_path: Path
) -> None:
    """A real KTO run (two steps of a tiny model on the writer's kto.parquet) behind /metrics."""
    import pyarrow.parquet as pq

    from prospect.spec import TrainingSpec
    from prospect.stages.train import train

    experiment = "flow-training"
    items = [_item(number) for number in range(1, 9)]
    records = [
        _answer(item, role, Verdict.CORRECT if (number + index) % 2 else Verdict.INCORRECT)
        for number, item in enumerate(items)
        for index, role in enumerate(("large", "small"))
    ]
    store = DirStore(tmp_path / "store")
    manifest = write_dataset(
        store=store,
        experiment=experiment,
        spec_digest="a" * 64,
        benchmark_digest="b" * 64,
        records=records,
        items=items,
    )
    kto_path = Path(store.uri(manifest.key("kto.parquet")))
    rows = pq.read_table(kto_path).to_pylist()
    model = tiny_causal_lm(
        tmp_path / "model", [f"{row['prompt']} {row['completion']}" for row in rows]
    )

    server = metrics.serve(metrics_port)
    try:
        result = train(
            spec=TrainingSpec(max_steps=2, batch_size=4, max_length=64, learning_rate=1e-4),
            model_path=model,
            kto_path=kto_path,
            preferences_path=None,
            output_dir=tmp_path / "train",
            experiment=experiment,
        )
        last = [step for step in result.history if "loss" in step][-1]

        steps = prometheus.wait_for(
            f'prospect_training_step{{experiment="{experiment}", job="prospect"}}',
            lambda samples: list(samples.values()) == [2],
        )
        assert steps
        loss = prometheus.samples(f'prospect_training_loss{{experiment="{experiment}"}}')
        assert list(loss.values()) == [pytest.approx(result.final_loss)]
        rewards = prometheus.samples(f'prospect_training_rewards{{experiment="{experiment}"}}')
        assert by("side")(rewards) == {
            ("chosen",): pytest.approx(last["rewards/chosen"]),
            ("rejected",): pytest.approx(last["rewards/rejected"]),
        }
        margin = prometheus.samples(f'prospect_training_reward_margin{{experiment="{experiment}"}}')
        assert list(margin.values()) == [pytest.approx(last["rewards/margins"])]
        rate = prometheus.samples(f'prospect_training_learning_rate{{experiment="{experiment}"}}')
        assert list(rate.values()) == [pytest.approx(last["learning_rate"])]
        kl = prometheus.samples(f'prospect_training_kl{{experiment="{experiment}"}}')
        assert list(kl.values()) == [pytest.approx(last["kl"])]
        throughput = prometheus.samples(
            f'prospect_training_tokens_per_second{{experiment="{experiment}"}}'
        )
        assert next(iter(throughput.values())) > 0
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.usefixtures("fresh_registry")
def test_pushing_keeps_a_long_stage_visible_while_it_runs(
    prometheus: Prometheus, pushgateway: Pushgateway
) -> None:
    experiment = "flow-long-grading"
    with metrics.pushing(
        pushgateway.address,
        job="prospect-stage",
        grouping=grouping(experiment, "grade"),
        every=0.2,
    ):
        for _ in range(3):
            count_answer(experiment, "large", Verdict.CORRECT)
        # Seen while the stage is still inside its block: the periodic push carried it.
        prometheus.wait_for(
            f'prospect_answers_graded_total{{experiment="{experiment}"}}',
            lambda samples: list(samples.values()) == [3],
        )
        count_answer(experiment, "large", Verdict.INCORRECT)

    final = prometheus.wait_for(
        f'sum(prospect_answers_graded_total{{experiment="{experiment}"}})',
        lambda samples: list(samples.values()) == [4],
    )
    assert final


@pytest.mark.usefixtures("fresh_registry")
def test_a_push_to_an_unreachable_gateway_is_logged_and_the_stage_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics.answers_graded_total.labels("flow-offline", "large", "correct").inc()
    address = f"127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="prospect"):
        metrics.push(address, job="prospect-stage", grouping=grouping("flow-offline", "grade"))
    assert f"could not push metrics to {address}" in caplog.text


def test_no_gateway_means_no_push(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="prospect"),
        metrics.pushing(
            None, job="prospect-stage", grouping=grouping("flow-local", "grade"), every=0.01
        ),
    ):
        pass
    metrics.push("", job="prospect-stage", grouping=grouping("flow-local", "grade"))
    assert "push" not in caplog.text
