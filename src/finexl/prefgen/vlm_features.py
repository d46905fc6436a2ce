"""A real vision-language model as the preference extractor (PREFGEN.md section 5).

Any transformers model that ``AutoModelForImageTextToText`` loads (LLaVA, Idefics, Qwen-VL
kin), from a local directory or a Hugging Face id already in the local cache (never
downloaded), reads a user's liked and disliked images and a question through the model's own
processor and chat template. PrefGen needs two things from it, and so from any extractor
(the shipped tiny one included), written down as :class:`PreferenceExtractor`:

- ``layer_states(queries, layers)``: the last-token hidden state of the chosen layers, where
  "layer i" means ``hidden_states[i]`` of the language model (0 = the embeddings with the image
  features in their slots, i = the residual stream after block i, and the last index L = after
  the final norm, exactly as transformers returns it). States are read with hooks on the
  decoder blocks (``hidden_states[i]`` is block i's input; the final norm's output is entry L),
  so only the chosen layers are kept, and hooks are resolved on the model as it is when called,
  i.e. after PEFT wrapping, and sit on whole blocks so they see the LoRA deltas.
- ``answer(queries)``: the model's answer text to each question (greedy).

``e_core`` and ``e_sem`` are means over the layer bands the probes chose
(:func:`pool_layer_bands`). Preference-VQA fine-tuning uses peft LoRA on the language model
only (:func:`make_vlm_lora_config`: a regex, because a suffix list like ``["q_proj"]`` also
hits the vision tower).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from finexl.errors import FinexlError

if TYPE_CHECKING:
    import torch
    from PIL import Image

logger = logging.getLogger(__name__)

LIKED_HEADER = "Images this user liked:"
DISLIKED_HEADER = "Images this user disliked:"
CANDIDATES_HEADER = "New images:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
# The language model's decoder blocks under every layout transformers has used for VLMs:
# LLaVA/Qwen2-VL in transformers 5 (``model.language_model.layers``), older LLaVA
# (``language_model.model.layers``), Idefics3/SmolVLM (``model.text_model.layers``).
LANGUAGE_MODEL_BLOCKS = r"(?:.*\.)?(?:language_model|text_model)(?:\.model)?\.layers\.\d+"
DEFAULT_LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class PreferenceQuery:
    """One user's reference images and a question about them.

    ``liked`` and ``disliked`` are PIL images; the extractor marks each set as liked or
    disliked in its own way (the real VLM: a header line before each set in the chat turn).
    ``candidates`` are new images a question is about ("would this user like the new
    image?"), shown after the references.
    """

    liked: tuple[Image.Image, ...]
    disliked: tuple[Image.Image, ...]
    question: str
    candidates: tuple[Image.Image, ...] = ()  # new images the question asks about


@runtime_checkable
class PreferenceExtractor(Protocol):
    """What PrefGen asks of a preference extractor (tiny or real).

    ``num_layers`` counts the readable layers 0..num_layers-1 (transformer blocks + 1);
    ``hidden_size`` is the width of one state.
    """

    num_layers: int
    hidden_size: int

    def layer_states(self, queries: Sequence[PreferenceQuery],
                     layers: Sequence[int]) -> np.ndarray:
        """Last-token states, float32 ``(len(queries), len(layers), hidden_size)``."""
        ...

    def answer(self, queries: Sequence[PreferenceQuery], *, max_new_tokens: int = 8) -> list[str]:
        """The extractor's answer to each query's question."""
        ...


def pool_layer_bands(states: np.ndarray, layers: Sequence[int], core_layers: Sequence[int],
                     sem_layers: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(e_core, e_sem)``: means of ``states`` over the two layer bands the probes chose.

    Parameters
    ----------
    states : ndarray
        ``(n, len(layers), hidden)`` from :meth:`PreferenceExtractor.layer_states`.
    layers : sequence of int
        The layer index of each slot of axis 1.
    core_layers, sem_layers : sequence of int
        The bands (each a subset of ``layers``).

    Returns
    -------
    tuple of ndarray
        Two float32 ``(n, hidden)`` arrays.
    """
    position = {layer: slot for slot, layer in enumerate(layers)}
    pooled = []
    for name, band in (("e_core", core_layers), ("e_sem", sem_layers)):
        missing = [layer for layer in band if layer not in position]
        if not band or missing:
            raise ValueError(f"{name} band {list(band)} is empty or reads layers {missing}"
                             f" that were not extracted ({list(layers)})")
        pooled.append(states[:, [position[layer] for layer in band]].mean(axis=1)
                      .astype(np.float32))
    return pooled[0], pooled[1]


# --- loading ---------------------------------------------------------------------------------

def resolve_vlm_directory(spec: str | Path) -> Path:
    """The local directory ``spec`` names: a model folder, or a hub id found in the local cache."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists() or not _HUB_ID.match(text):
        if not path.is_dir():
            raise FinexlError(f"VLM {text!r}: no such directory; pass a transformers"
                              " vision-language model folder or a Hugging Face id already in"
                              " the local cache")
        return path.resolve()
    from huggingface_hub import snapshot_download

    repo_id, _, revision = text.partition("@")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, validation errors, a broken cache
        raise FinexlError(
            f"VLM {text!r} is not a local directory and not in the local Hugging Face cache,"
            f" and finexl never downloads; run `huggingface-cli download {repo_id}` on a"
            " connected machine (and copy the cache or set HF_HOME), or pass the model folder"
        ) from exc


def check_vlm_directory(directory: Path) -> str:
    """The ``model_type`` of ``directory`` if AutoModelForImageTextToText can load it."""
    import json

    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config_path = directory / "config.json"
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise FinexlError(f"VLM folder {directory} has no readable config.json ({exc})") from exc
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise FinexlError(f"VLM folder {directory} holds a {model_type!r} model, which"
                          " transformers' AutoModelForImageTextToText does not load; pass an"
                          " image-text-to-text model (LLaVA, Idefics, Qwen-VL, ...)")
    return model_type


class VLMFeatureExtractor:
    """A transformers vision-language model read as a :class:`PreferenceExtractor`.

    Build it with :meth:`load`; ``model`` may later be wrapped by :meth:`add_lora`.
    """

    def __init__(self, model: Any, processor: Any, *, model_id: str = "vlm") -> None:
        self.model = model
        self.processor = processor
        self.model_id = model_id
        text_config = model.config.get_text_config()
        self.num_layers = int(text_config.num_hidden_layers) + 1
        self.hidden_size = int(text_config.hidden_size)
        if getattr(processor, "chat_template", None) is None:
            raise FinexlError(f"VLM {model_id}: its processor has no chat template, so the"
                              " question cannot be put in the model's own prompt format")

    def __repr__(self) -> str:
        return f"VLMFeatureExtractor({self.model_id!r}, layers={self.num_layers})"

    @classmethod
    def load(cls, spec: str | Path, *, device: str = "cpu", dtype: str = "float32",
             lora: str | Path | None = None) -> VLMFeatureExtractor:
        """Load a VLM by folder or cached hub id (offline), optionally with a saved LoRA."""
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from finexl.encoders.clip import check_dtype

        check_dtype(dtype)
        directory = resolve_vlm_directory(spec)
        check_vlm_directory(directory)
        model = AutoModelForImageTextToText.from_pretrained(
            directory, local_files_only=True, dtype=getattr(torch, dtype))
        processor = AutoProcessor.from_pretrained(directory, local_files_only=True)
        if lora is not None:
            from peft import PeftModel

            lora_dir = Path(lora)
            if not (lora_dir / "adapter_config.json").is_file():
                raise FinexlError(f"LoRA folder {lora_dir} has no adapter_config.json (write it"
                                  " with VLMFeatureExtractor.save_lora)")
            model = PeftModel.from_pretrained(model, lora_dir, is_trainable=False)
        from finexl.encoders.clip import resolve_device

        model.to(resolve_device(device)).eval()
        return cls(model, processor, model_id=str(spec))

    # --- prompts ---

    def messages(self, query: PreferenceQuery) -> list[dict[str, Any]]:
        """One user turn: a header and the liked images, then the disliked ones, the question."""
        content: list[dict[str, Any]] = [{"type": "text", "text": LIKED_HEADER}]
        content += [{"type": "image"} for _ in query.liked]
        if query.disliked:
            content.append({"type": "text", "text": DISLIKED_HEADER})
            content += [{"type": "image"} for _ in query.disliked]
        if query.candidates:
            content.append({"type": "text", "text": CANDIDATES_HEADER})
            content += [{"type": "image"} for _ in query.candidates]
        content.append({"type": "text", "text": query.question})
        return [{"role": "user", "content": content}]

    def prompt(self, query: PreferenceQuery) -> str:
        return self.processor.apply_chat_template(self.messages(query),
                                                  add_generation_prompt=True, tokenize=False)

    def encode(self, queries: Sequence[PreferenceQuery], *, answers: Sequence[str] | None = None,
               padding_side: str = "right") -> Any:
        """Processor inputs for ``queries`` (with each answer and EOS appended when given)."""
        if not queries:
            raise ValueError("no queries")
        texts = [self.prompt(query) for query in queries]
        if answers is not None:
            eos = self.processor.tokenizer.eos_token or ""
            texts = [text + answer + eos for text, answer in zip(texts, answers, strict=True)]
        images = [[_rgb(image) for image in (*query.liked, *query.disliked, *query.candidates)]
                  for query in queries]
        tokenizer = self.processor.tokenizer
        previous, tokenizer.padding_side = tokenizer.padding_side, padding_side
        try:
            inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = previous
        return inputs.to(model_device(self.model))

    # --- reading ---

    def layer_states(self, queries: Sequence[PreferenceQuery],
                     layers: Sequence[int]) -> np.ndarray:
        """Last-token state of each layer in ``layers``, float32 ``(n, len(layers), hidden)``."""
        import torch

        layers = [int(layer) for layer in layers]
        bad = [layer for layer in layers if not 0 <= layer < self.num_layers]
        if bad:
            raise ValueError(f"layers {bad} out of range 0..{self.num_layers - 1}")
        inputs = self.encode(queries)
        last = last_token_positions(inputs["attention_mask"])
        with torch.no_grad(), record_layers(self.model, layers) as states:
            self.model(**inputs, logits_to_keep=1)
        rows = torch.arange(len(queries), device=last.device)
        stacked = torch.stack([states[layer][rows, last] for layer in layers], dim=1)
        return stacked.float().cpu().numpy()

    def answer(self, queries: Sequence[PreferenceQuery], *, max_new_tokens: int = 8) -> list[str]:
        """Greedy answers (left padding, the decoder-only generation convention)."""
        import torch

        inputs = self.encode(queries, padding_side="left")
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return [text.strip() for text in
                self.processor.batch_decode(new_tokens, skip_special_tokens=True)]

    def vqa_loss(self, queries: Sequence[PreferenceQuery], answers: Sequence[str]) -> torch.Tensor:
        """Mean cross-entropy of each answer (and EOS) given its query; prompt tokens not scored.

        The answer's tokens are the last ``len(tokenize(answer + eos))`` real tokens of each
        row (right padding), which holds when the prompt ends at a token boundary, as a
        generation prompt does.
        """
        inputs = self.encode(queries, answers=answers)
        tokenizer = self.processor.tokenizer
        eos = tokenizer.eos_token or ""
        labels = inputs["input_ids"].clone()
        mask = inputs["attention_mask"]
        lengths = mask.sum(dim=1)
        for row, answer in enumerate(answers):
            n_answer = len(tokenizer(answer + eos, add_special_tokens=False)["input_ids"])
            labels[row, : int(lengths[row]) - n_answer] = -100
        labels[mask == 0] = -100
        return self.model(**inputs, labels=labels).loss

    # --- LoRA ---

    def add_lora(self, config: Any = None) -> None:
        """Wrap the model with peft LoRA on the language model (:func:`make_vlm_lora_config`)."""
        from peft import get_peft_model

        if _is_peft(self.model):
            raise FinexlError(f"VLM {self.model_id} already carries a LoRA adapter")
        self.model = get_peft_model(self.model, config or make_vlm_lora_config())

    def save_lora(self, directory: str | Path) -> Path:
        """Write the LoRA as ``adapter_model.safetensors`` + ``adapter_config.json``."""
        if not _is_peft(self.model):
            raise FinexlError(f"VLM {self.model_id} has no LoRA adapter to save")
        directory = Path(directory)
        self.model.save_pretrained(directory)
        return directory


def make_vlm_lora_config(*, rank: int = 8, alpha: int = 16, dropout: float = 0.0,
                         projections: Sequence[str] = DEFAULT_LORA_PROJECTIONS) -> Any:
    """A ``LoraConfig`` whose regex reaches ``projections`` in the language model's blocks only.

    peft matches a string target against the whole module name, so the vision tower's
    ``q_proj`` and the projector are left alone whatever they are called.
    """
    from peft import LoraConfig

    names = "|".join(re.escape(name) for name in projections)
    target = rf"{LANGUAGE_MODEL_BLOCKS}\.(?:self_attn|mlp)\.(?:{names})"
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target,
                      bias="none")


def finetune_vqa(extractor: VLMFeatureExtractor,
                 batches: Iterable[Sequence[tuple[PreferenceQuery, str]]], *,
                 learning_rate: float = 1e-4, accelerator: Any = None,
                 max_grad_norm: float = 1.0) -> list[float]:
    """Preference-VQA fine-tuning of the LoRA weights; returns the loss of each batch.

    ``batches`` yields lists of (query, answer). The trainable parameters are a list (an
    iterator would be used up by the optimizer and leave nothing to clip); an
    ``accelerate.Accelerator`` handles device, mixed precision and gradient accumulation.
    """
    import torch
    from accelerate import Accelerator

    if not _is_peft(extractor.model):
        extractor.add_lora()
    accelerator = accelerator or Accelerator(cpu=model_device(extractor.model).type == "cpu")
    trainable = [p for p in extractor.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate)
    model, optimizer = accelerator.prepare(extractor.model, optimizer)
    extractor.model = model
    model.train()
    losses = []
    for batch in batches:
        queries, answers = zip(*batch, strict=True)
        with accelerator.accumulate(model):
            loss = extractor.vqa_loss(list(queries), list(answers))
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(trainable, max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    extractor.model = accelerator.unwrap_model(model)
    return losses


# --- hooks -----------------------------------------------------------------------------------

def decoder_blocks(model: Any) -> tuple[Any, Any]:
    """``(blocks, final_norm)`` of the language model, found on the model as it is now.

    Tries ``get_decoder()`` (which peft forwards to the wrapped model), then any ModuleList
    whose name matches :data:`LANGUAGE_MODEL_BLOCKS` minus the index.
    """
    import torch

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    blocks = getattr(decoder, "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        pattern = re.compile(LANGUAGE_MODEL_BLOCKS.removesuffix(r"\.\d+"))
        found = [(name, module) for name, module in model.named_modules()
                 if isinstance(module, torch.nn.ModuleList) and pattern.fullmatch(name)]
        if len(found) != 1:
            raise FinexlError(f"cannot find the language model's decoder blocks in"
                              f" {type(model).__name__} ({len(found)} candidates)")
        name, blocks = found[0]
        decoder = model.get_submodule(name.rsplit(".", 1)[0])
    return blocks, getattr(decoder, "norm", None)


@contextmanager
def record_layers(model: Any, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Hooks filling ``{layer: (batch, tokens, hidden)}`` during the forward passes inside.

    Layer i < L is block i's input (``hidden_states[i]``); layer L is the final norm's output.
    """
    blocks, final_norm = decoder_blocks(model)
    states: dict[int, torch.Tensor] = {}
    handles = []

    def block_input(layer: int):
        def hook(module, args, kwargs):
            states[layer] = args[0] if args else kwargs["hidden_states"]
        return hook

    def keep_output(layer: int):
        def hook(module, args, output):
            states[layer] = output[0] if isinstance(output, tuple) else output
        return hook

    try:
        for layer in sorted(set(layers)):
            if layer < len(blocks):
                handles.append(blocks[layer].register_forward_pre_hook(block_input(layer),
                                                                       with_kwargs=True))
            elif layer == len(blocks) and final_norm is not None:
                handles.append(final_norm.register_forward_hook(keep_output(layer)))
            else:
                raise ValueError(f"layer {layer} out of range 0..{len(blocks)}")
        yield states
    finally:
        for handle in handles:
            handle.remove()


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, for left or right padding."""
    counts = attention_mask.long().cumsum(dim=1)
    return (counts == counts[:, -1:]).long().argmax(dim=1)


def model_device(model: Any) -> torch.device:
    """Where ``model``'s weights are (also through a DDP or peft wrapper, which lack .device)."""
    return next(model.parameters()).device


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")
