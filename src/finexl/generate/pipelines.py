"""Load a text-to-image pipeline from a model spec, offline, and apply LoRAs to it.

A model spec is one of:

- ``builtin:tiny``: the tiny model shipped with finexl (:mod:`finexl.generate.tiny`);
- a local diffusers directory (with ``model_index.json``): Stable Diffusion 1.x/2.x, SDXL,
  SD3, Flux, a DreamBooth or full fine-tune, or a saved tiny model;
- a single checkpoint file (``.safetensors`` or ``.ckpt``, e.g. a merged model), loaded with
  ``from_single_file`` by the pipeline class its keys point to;
- a Hugging Face id (``org/name``) already in the local cache; nothing is downloaded.

Every problem a user can cause (a missing path, a folder that is not a pipeline, a LoRA that
does not fit) is a one-line ``FinexlError``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finexl.errors import FinexlError
from finexl.generate.compat import dtype_argument

logger = logging.getLogger(__name__)

BUILTIN_MODELS = ("builtin:tiny",)
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA file (or a folder holding ``pytorch_lora_weights.safetensors``) and its scale."""

    path: str
    scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "scale": self.scale}


def parse_lora_spec(text: str) -> LoraSpec:
    """Parse the CLI form ``PATH[:SCALE]`` (``my.safetensors:0.8``); the scale defaults to 1.

    A colon that is not followed by a number stays part of the path (``C:\\loras\\x``).

    Raises
    ------
    FinexlError
        An empty path.
    """
    path, _, scale = text.rpartition(":")
    if path and scale:
        try:
            return LoraSpec(path=path, scale=float(scale))
        except ValueError:
            pass
    if not text.strip():
        raise FinexlError("--lora got an empty value; pass PATH or PATH:SCALE, e.g."
                          " style.safetensors:0.8")
    return LoraSpec(path=text, scale=1.0)


def resolve_dtype(name: str):
    """A ``torch.dtype`` from ``float32`` / ``float16`` / ``bfloat16`` (or fp32, fp16, bf16)."""
    import torch

    key = DTYPES.get(str(name).lower())
    if key is None:
        raise FinexlError(f"dtype {name!r} is not supported; choose float32, float16 or bfloat16")
    return getattr(torch, key)


def resolve_device(name: str) -> str:
    """``auto`` becomes ``cuda`` when available, then ``mps``, else ``cpu``; others are checked."""
    import torch

    name = str(name).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FinexlError(f"device {name!r} was asked for but CUDA is not available here; use"
                          f" --device cpu or auto")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise FinexlError(f"device {name!r} is not known; choose auto, cpu, cuda, cuda:N or mps")
    return name


def model_id(spec: str) -> str:
    """The id recorded in ``metadata.jsonl``: the builtin name, an absolute path, or the HF id."""
    if spec in BUILTIN_MODELS:
        return spec
    path = Path(spec).expanduser()
    if path.exists():
        return str(path.resolve())
    return spec


def _quiet_loading() -> None:
    # finexl draws its own bars on stderr; the libraries' loading bars are noise there.
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def load_pipeline(spec: str, *, device: str = "cpu", dtype: str = "float32",
                  loras: Sequence[LoraSpec] = (), single_file_config: str | None = None) -> Any:
    """Load the pipeline named by ``spec`` (offline), apply ``loras`` and place it on ``device``.

    Parameters
    ----------
    spec
        ``builtin:tiny``, a diffusers directory, a ``.safetensors``/``.ckpt`` checkpoint, or a
        Hugging Face id in the local cache.
    device, dtype
        Where and in what precision to run (``resolve_device`` / ``resolve_dtype`` names).
    loras
        Applied in order, each as its own adapter with its scale.
    single_file_config
        For a checkpoint file: a local diffusers directory (or cached HF id) of the same
        architecture to take the component configs from; without it diffusers looks for its
        default config repository in the local cache.

    Returns
    -------
    diffusers.DiffusionPipeline
        With its own progress bar switched off (finexl draws one per batch).

    Raises
    ------
    FinexlError
        The spec names nothing loadable, a LoRA is missing or does not fit the model.
    """
    torch_dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    _quiet_loading()
    pipe = _load_base(spec, torch_dtype, single_file_config)
    if loras:
        apply_loras(pipe, loras)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    logger.info("loaded %s (%s) on %s in %s", spec, type(pipe).__name__, device, dtype)
    return pipe


def check_model_spec(spec: str) -> None:
    """Fail fast, without loading anything, when ``spec`` cannot name a model here.

    Explaining from two models generates the base side first; a typo in the personalized
    model's path should not cost the user that whole generation before the error.
    """
    if spec in BUILTIN_MODELS or Path(spec).expanduser().exists():
        return
    if spec.startswith("builtin:"):
        raise FinexlError(f"model {spec!r} is not a builtin model; the builtin models are"
                          f" {', '.join(BUILTIN_MODELS)}")
    if _HF_ID.match(spec) and not spec.startswith((".", "~")):
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(spec, "model_index.json"), str):
            return
        raise FinexlError(f"model {spec!r} is neither a local path nor a pipeline in the local"
                          f" Hugging Face cache; download it first (huggingface-cli download"
                          f" {spec}) or pass its folder")
    raise FinexlError(f"model {spec!r} does not exist: pass builtin:tiny, a diffusers folder, a"
                      f" .safetensors checkpoint, or a Hugging Face id (org/name) that is in the"
                      f" local cache")


def _load_base(spec: str, torch_dtype, single_file_config: str | None):
    check_model_spec(spec)  # after it: the builtin, an existing path, or a cached hub id
    if spec in BUILTIN_MODELS:
        from finexl.generate import tiny

        return _load_tiny(tiny.BUILTIN_DIR, torch_dtype)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_directory(path, torch_dtype)
    if path.is_file():
        return _load_checkpoint(path, torch_dtype, single_file_config)
    return _load_hub_id(spec, torch_dtype)


def _load_directory(path: Path, torch_dtype):
    from finexl.generate import tiny

    if not (path / "model_index.json").is_file():
        hint = ""
        if (path / LORA_WEIGHT_NAME).is_file():
            hint = " (it holds a LoRA: pass the base model with --model and this with --lora)"
        elif (path / "config.json").is_file():
            hint = " (it looks like a single model component, not a whole pipeline)"
        raise FinexlError(f"model folder {path} is not a diffusers pipeline: it has no"
                          f" model_index.json{hint}; pass the pipeline's top folder, or a"
                          f" .safetensors checkpoint file")
    if tiny.is_tiny_pipeline_dir(path):
        return _load_tiny(path, torch_dtype)
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.from_pretrained(str(path), local_files_only=True,
                                                 **{dtype_argument(): torch_dtype})
    except (OSError, ValueError, KeyError, ImportError, AttributeError, TypeError) as exc:
        raise FinexlError(f"model folder {path} could not be loaded as a diffusers pipeline"
                          f" ({_first_line(exc)}); check that every component folder named in"
                          f" model_index.json is complete") from exc


def _load_tiny(path: Path, torch_dtype):
    from finexl.generate import tiny

    if not (Path(path) / "model_index.json").is_file():
        raise FinexlError(f"the builtin tiny model is missing from {path}; reinstall finexl or"
                          f" train it with scripts/train_tiny_t2i.py")
    try:
        return tiny.load_tiny_pipeline(path, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise FinexlError(f"tiny model folder {path} could not be loaded ({_first_line(exc)});"
                          f" is it complete?") from exc


def _load_hub_id(spec: str, torch_dtype):
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.from_pretrained(spec, local_files_only=True,
                                                 **{dtype_argument(): torch_dtype})
    except (OSError, ValueError) as exc:
        raise FinexlError(f"model {spec!r} is neither a local path nor a pipeline in the local"
                          f" Hugging Face cache ({_first_line(exc)}); download it first"
                          f" (huggingface-cli download {spec}) or pass its folder") from exc


# Checkpoint files: which pipeline class their keys belong to (first match wins).
_CHECKPOINT_KINDS = (
    ("double_blocks.", "FluxPipeline"),
    ("joint_blocks.", "StableDiffusion3Pipeline"),
    ("conditioner.embedders.1.", "StableDiffusionXLPipeline"),
    ("model.diffusion_model.input_blocks.", "StableDiffusionPipeline"),
)


def checkpoint_class(path: Path) -> str:
    """The diffusers pipeline class for a single-file checkpoint, from its tensor names.

    Raises
    ------
    FinexlError
        The file is a LoRA, unreadable, or of an architecture finexl does not know.
    """
    keys = _checkpoint_keys(path)
    # LoRA files in every known layout (kohya lora_unet_/lora_down, peft lora_A, diffusers
    # .lora.down) name "lora" in their tensor names; whole models never do.
    if any("lora" in key.lower() for key in keys[:200]):
        raise FinexlError(f"{path} is a LoRA, not a whole model; pass the base model with"
                          f" --model and this file with --lora {path}")
    for marker, class_name in _CHECKPOINT_KINDS:
        if any(marker in key for key in keys):
            return class_name
    raise FinexlError(f"checkpoint {path} is not a Stable Diffusion 1.x/2.x, SDXL, SD3 or Flux"
                      f" checkpoint (none of its {len(keys)} tensor names match); convert it to"
                      f" a diffusers folder and pass that")


def _checkpoint_keys(path: Path) -> list[str]:
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise FinexlError(f"model file {path} is not a checkpoint (.safetensors or .ckpt); pass"
                          f" a diffusers folder, a checkpoint file, or builtin:tiny")
    if path.suffix.lower() == ".ckpt":
        # Reading a .ckpt means unpickling it; diffusers does that itself, so trust the user.
        return ["model.diffusion_model.input_blocks."]
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError) as exc:
        raise FinexlError(f"checkpoint {path} cannot be read as safetensors"
                          f" ({_first_line(exc)}); is the file complete?") from exc


def _load_checkpoint(path: Path, torch_dtype, single_file_config: str | None):
    import diffusers

    class_name = checkpoint_class(path)
    pipeline_class = getattr(diffusers, class_name)
    extra = {"config": single_file_config} if single_file_config else {}
    try:
        return pipeline_class.from_single_file(str(path), local_files_only=True,
                                               **{dtype_argument(): torch_dtype}, **extra)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise FinexlError(f"checkpoint {path} could not be loaded as {class_name}"
                          f" ({_first_line(exc)}); offline, diffusers needs the matching"
                          f" config: pass a local diffusers folder of the same architecture"
                          f" as single_file_config (--single-file-config)") from exc


# LoRA --------------------------------------------------------------------------------------

def weights_file(path: str | Path, file_name: str, missing: str) -> Path:
    """The weights file ``path`` names: the file itself, or ``file_name`` in a folder.

    ``missing`` is the one-line error when there is no such file.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / file_name
    if not path.is_file():
        raise FinexlError(missing)
    return path


def _lora_file(spec: LoraSpec) -> Path:
    return weights_file(spec.path, LORA_WEIGHT_NAME,
                        f"LoRA {spec.path} does not exist; pass a .safetensors LoRA file or a"
                        f" folder holding {LORA_WEIGHT_NAME}")


def apply_loras(pipe: Any, loras: Sequence[LoraSpec]) -> list[str]:
    """Load each LoRA as an adapter (``lora0``, ``lora1``...) and activate all with their scales.

    Returns
    -------
    list of str
        The adapter names, in the order of ``loras``.

    Raises
    ------
    FinexlError
        A missing file, a pipeline without LoRA support, or a LoRA whose weights do not fit
        the model (none of its layers found, or shapes that disagree).
    """
    if not hasattr(pipe, "load_lora_weights"):
        raise FinexlError(f"{type(pipe).__name__} does not support LoRA adapters; pass a"
                          f" merged checkpoint instead of --lora")
    names = []
    for index, spec in enumerate(loras):
        path = _lora_file(spec)
        name = f"lora{index}"
        try:
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except (ValueError, KeyError, RuntimeError, OSError, TypeError) as exc:
            raise FinexlError(f"LoRA {spec.path} does not fit {type(pipe).__name__}"
                              f" ({_first_line(exc)}); was it trained for this base"
                              f" model?") from exc
        loaded = {n for adapters in pipe.get_list_adapters().values() for n in adapters}
        if name not in loaded:
            raise FinexlError(f"LoRA {spec.path} has no layer that matches"
                              f" {type(pipe).__name__}; was it trained for this base model?")
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[float(s.scale) for s in loras])
    return names


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."
