"""The shipped tiny text-to-image model (``builtin:tiny``) as a real diffusers pipeline.

``FinexlTinyPipeline`` is a pixel-space diffusion model: a small ``UNet2DConditionModel``
denoises 32x32 RGB images folded into 16x16 grids of 2x2 patches (``pixel_unshuffle``,
a lossless stand-in for a VAE that makes every step 4x cheaper), conditioned on a small
``CLIPTextModel`` through cross-attention (token states) and the time embedding (pooled
state). The tokenizer is word level: a known word is one token, any other word is
``<unk>``. It is saved and loaded with ``save_pretrained`` / ``from_pretrained`` like any
diffusers pipeline, and it includes diffusers' LoRA loader, so generation, LoRA and
fine-tuning take the same code paths as Stable Diffusion. It also includes diffusers'
IP-Adapter loader and takes ``ip_adapter_image_embeds``, which is how a PrefGen user branch
(:mod:`finexl.prefgen.user_branch`) conditions it.

Importing this module imports torch and diffusers; :mod:`finexl.generate` imports it only
when a tiny model is used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.loaders import IPAdapterMixin, StableDiffusionLoraLoaderMixin
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

BUILTIN_DIR = Path(__file__).resolve().parent / "tiny"
BUILTIN_SPEC = "builtin:tiny"
IMAGE_CHANNELS = 3
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
# transformers 5 saves fast tokenizers as "TokenizersBackend"; the older name loads in both.
_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


class FinexlTinyPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin, IPAdapterMixin):
    """Text-to-image in pixel space for small images; the ``builtin:tiny`` model.

    Parameters
    ----------
    unet : UNet2DConditionModel
        ``in_channels = 3 * patch**2``; it sees ``(batch, 3 * patch**2, side / patch,
        side / patch)`` and is conditioned through ``encoder_hidden_states`` (token states)
        and ``class_labels`` (the pooled text state, projected into the time embedding).
    text_encoder : transformers.CLIPTextModel
    tokenizer : transformers.PreTrainedTokenizerFast
        Word level, padding to ``model_max_length`` tokens.
    scheduler : diffusers scheduler
        DDIM by default (any scheduler with ``set_timesteps`` / ``step`` works).
    """

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet, text_encoder, tokenizer, scheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                              scheduler=scheduler)

    # Geometry ---------------------------------------------------------------------------

    @property
    def patch_size(self) -> int:
        """Side of the pixel patches folded into the UNet's channels."""
        return math.isqrt(self.unet.config.in_channels // IMAGE_CHANNELS)

    @property
    def default_size(self) -> int:
        """Image side in pixels the model was trained at."""
        return int(self.unet.config.sample_size) * self.patch_size

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``(b, 3, h, w)`` in [-1, 1] to the UNet's ``(b, 3 p^2, h/p, w/p)``."""
        return F.pixel_unshuffle(images, self.patch_size)

    def unpatchify(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`patchify`."""
        return F.pixel_shuffle(latents, self.patch_size)

    # Text -------------------------------------------------------------------------------

    def encode_prompt(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states ``(b, tokens, dim)`` and pooled states ``(b, dim)`` (gradients kept)."""
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                                max_length=self.tokenizer.model_max_length,
                                return_tensors="pt")
        output = self.text_encoder(tokens.input_ids.to(self.text_encoder.device))
        return output.last_hidden_state, output.pooler_output

    def denoise(self, latents: torch.Tensor, timestep, hidden: torch.Tensor,
                pooled: torch.Tensor, image_embeds: list[torch.Tensor] | None = None
                ) -> torch.Tensor:
        """The UNet's prediction for ``latents`` at ``timestep`` (shape of ``latents``).

        ``image_embeds``: for a UNet with an IP-Adapter (user) branch, one ``(batch, 1, dim)``
        tensor per adapter.
        """
        added = {"image_embeds": image_embeds} if image_embeds is not None else None
        return self.unet(latents, timestep, encoder_hidden_states=hidden,
                         class_labels=pooled.to(latents.dtype),
                         added_cond_kwargs=added).sample

    # Sampling ---------------------------------------------------------------------------

    def check_inputs(self, prompts: Sequence[str], height: int, width: int,
                     num_inference_steps: int, generator) -> None:
        step = self.patch_size * 2 ** (len(self.unet.config.block_out_channels) - 1)
        if height % step or width % step or height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive multiples of {step}, got"
                             f" {height}x{width}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if isinstance(generator, list) and len(generator) != len(prompts):
            raise ValueError(f"{len(generator)} generators for {len(prompts)} images; pass one"
                             f" per image or a single one")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 2.0,
        negative_prompt: str | Sequence[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        user_guidance_scale: float | None = None,
        user_negative_prompt: str | Sequence[str] | None = None,
        user_away_scale: float | None = None,
    ):
        """Generate images for ``prompt``.

        Parameters mirror ``StableDiffusionPipeline.__call__``. With a list of generators,
        image k depends only on ``generator[k]``, so it is the same in any batch.

        Returns
        -------
        ImagePipelineOutput
            ``images``: a list of PIL images (``output_type="pil"``), a float array of shape
            ``(b, height, width, 3)`` in [0, 1] (``"np"``), or a tensor ``(b, 3, height,
            width)`` in [0, 1] (``"pt"``). ``return_dict=False`` gives ``(images,)``.

        ``ip_adapter_image_embeds`` (with an IP-Adapter / user branch loaded): one tensor per
        adapter of shape ``(batch, 1, dim)``, or ``(2 * batch, 1, dim)`` with guidance, the
        null half first, as in diffusers' Stable Diffusion pipelines.

        ``user_guidance_scale`` w (with an adapter loaded) guides by the adapter's
        *difference* instead: every step is the base model's own step (adapter scales 0,
        with guidance as usual) plus ``w * (eps(prompt, embeds) - eps(prompt, null embeds))``
        with the adapter at its loaded scale. A shift the adapter gives every embedding
        cancels in that difference, where it survives when the null half only replaces the
        unconditional one. ``ip_adapter_image_embeds`` then always has the null half (2 *
        batch rows, null first), with guidance or without; w = 0 is the base model exactly.

        ``user_negative_prompt`` (drift-free only): the text of that difference's away half,
        one per prompt (default: the prompt itself). A user's disliked content named there
        ("red a star") is moved away from with the same weight w, so w = 0 is still the base
        model exactly.

        ``user_away_scale`` w_a (drift-free only; default w): weigh the two halves apart, each
        against the base model's own conditional prediction c:
        ``w * (eps(prompt, embeds) - c) - w_a * (eps(away, null embeds) - c)``; with w_a = w
        that is the difference above, and w_a > w moves further from what the user dislikes
        (what the branch gives everyone then survives with weight w - w_a).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        height = height or self.default_size
        width = width or self.default_size
        self.check_inputs(prompts, height, width, num_inference_steps, generator)
        hidden, pooled = self.encode_prompt(prompts)
        guided = guidance_scale > 1.0
        by_difference = user_guidance_scale is not None
        if by_difference and ip_adapter_image_embeds is None:
            raise ValueError("user_guidance_scale needs ip_adapter_image_embeds (user and null"
                             " rows)")
        if (user_negative_prompt is not None or user_away_scale is not None) \
                and not by_difference:
            raise ValueError("user_negative_prompt and user_away_scale need"
                             " user_guidance_scale")
        image_embeds = self._check_image_embeds(
            ip_adapter_image_embeds, len(prompts) * (2 if guided or by_difference else 1))
        prompt_hidden, prompt_pooled = hidden, pooled
        away_hidden, away_pooled = hidden, pooled
        if user_negative_prompt is not None:
            away_hidden, away_pooled = self.encode_prompt(_per_image(
                user_negative_prompt, "user_negative_prompt", len(prompts),
                num_images_per_prompt))
        if guided:
            hidden_neg, pooled_neg = self.encode_prompt(_per_image(
                negative_prompt if negative_prompt is not None else "", "negative_prompt",
                len(prompts), num_images_per_prompt))
            hidden = torch.cat([hidden_neg, hidden])
            pooled = torch.cat([pooled_neg, pooled])
        p = self.patch_size
        shape = (len(prompts), IMAGE_CHANNELS * p * p, height // p, width // p)
        latents = randn_tensor(shape, generator=generator, device=self._execution_device,
                               dtype=self.unet.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            if by_difference:
                with adapter_off(self.unet):
                    prediction = self.denoise(model_input, t, hidden, pooled,
                                              image_embeds if guided else
                                              [e.chunk(2)[1] for e in image_embeds])
            else:
                prediction = self.denoise(model_input, t, hidden, pooled, image_embeds)
            conditional = prediction
            if guided:
                unconditional, conditional = prediction.chunk(2)
                prediction = unconditional + guidance_scale * (conditional - unconditional)
            if by_difference and (user_guidance_scale or user_away_scale):
                pair = self.scheduler.scale_model_input(torch.cat([latents] * 2), t)
                away, toward = self.denoise(pair, t, torch.cat([away_hidden, prompt_hidden]),
                                            torch.cat([away_pooled, prompt_pooled]),
                                            image_embeds).chunk(2)
                if user_away_scale is None or user_away_scale == user_guidance_scale:
                    prediction = prediction + user_guidance_scale * (toward - away)
                else:
                    prediction = (prediction + user_guidance_scale * (toward - conditional)
                                  - user_away_scale * (away - conditional))
            latents = self.scheduler.step(prediction, t, latents).prev_sample
        images = (self.unpatchify(latents.float()).clamp(-1, 1) + 1) / 2
        images = self._to_output(images, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _check_image_embeds(self, embeds, rows: int) -> list[torch.Tensor] | None:
        needs = self.unet.encoder_hid_proj is not None
        if embeds is None:
            if needs:
                raise ValueError("this pipeline has an IP-Adapter (user branch) loaded; pass"
                                 " ip_adapter_image_embeds")
            return None
        if not needs:
            raise ValueError("ip_adapter_image_embeds given but no IP-Adapter is loaded")
        embeds = [e.to(self._execution_device, self.unet.dtype) for e in embeds]
        for e in embeds:
            if e.ndim != 3 or e.shape[0] != rows:
                raise ValueError(f"each ip_adapter_image_embeds tensor must be (batch, 1, dim)"
                                 f" with {rows} rows (null half first with guidance), got"
                                 f" {tuple(e.shape)}")
        return embeds

    @staticmethod
    def _to_output(images: torch.Tensor, output_type: str):
        if output_type == "pt":
            return images.cpu()
        array = images.permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "np":
            return array
        if output_type == "pil":
            from PIL import Image

            return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array]
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")


def _per_image(texts: str | Sequence[str], name: str, n_images: int,
               per_prompt: int) -> list[str]:
    """One text for every image: a single text for all, one per image, or one per prompt
    (repeated ``per_prompt`` times); anything else is a ``ValueError`` naming ``name``."""
    texts = [texts] * n_images if isinstance(texts, str) else list(texts)
    if len(texts) != n_images:
        texts = [t for t in texts for _ in range(per_prompt)]
    if len(texts) != n_images:
        raise ValueError(f"{name} has {len(texts) // per_prompt} texts for {n_images} images")
    return texts


# Building and saving ------------------------------------------------------------------------

@contextmanager
def adapter_off(unet: UNet2DConditionModel) -> Iterator[None]:
    """Within the block every IP-Adapter (user branch) processor of ``unet`` has scale 0,
    which diffusers' processors skip, so the UNet computes exactly what it does without one.
    """
    processors = [processor for processor in unet.attn_processors.values()
                  if isinstance(getattr(processor, "scale", None), list)]
    saved = [list(p.scale) for p in processors]
    for processor in processors:
        processor.scale = [0.0] * len(processor.scale)
    try:
        yield
    finally:
        for processor, scale in zip(processors, saved):
            processor.scale = scale


def build_tokenizer(words: Sequence[str], *, max_length: int = 16):
    """A word-level ``PreTrainedTokenizerFast``: each of ``words`` is one token.

    Text is NFKC-normalised and lower-cased, split on whitespace and punctuation; ids 0-3
    are ``<pad> <unk> <bos> <eos>``; every encoding is ``<bos> words... <eos>``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in sorted(set(words)):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                   unk_token="<unk>", bos_token="<bos>", eos_token="<eos>",
                                   model_max_length=max_length)


def build_scheduler(prediction_type: str = "sample") -> DDIMScheduler:
    """DDIM on a cosine schedule; ``prediction_type`` is ``v_prediction``, ``epsilon`` or
    ``sample`` (the UNet predicts the clean image)."""
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type=prediction_type, clip_sample=True,
                         clip_sample_range=1.0, timestep_spacing="trailing",
                         set_alpha_to_one=True)


def build_tiny_pipeline(words: Sequence[str], *, image_size: int = 32, patch: int = 2,
                        text_dim: int = 64, channels: Sequence[int] = (48, 96, 128),
                        prediction_type: str = "sample",
                        seed: int = 0) -> FinexlTinyPipeline:
    """A tiny pipeline with random weights, from configs (for training or tests).

    Parameters
    ----------
    words
        The tokenizer's vocabulary.
    image_size, patch
        Image side in pixels and the patch side folded into channels.
    text_dim
        Width of the text encoder (and the UNet's cross-attention).
    channels
        UNet block widths; cross-attention on all but the first (full-resolution) block.
    prediction_type
        What the UNet predicts (see ``build_scheduler``).
    seed
        Seed of the weight initialisation (a local generator state, not the global one).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer(words)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_dim, intermediate_size=text_dim * 2,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
        hidden_act="quick_gelu", bos_token_id=2, eos_token_id=3, pad_token_id=0,
        projection_dim=text_dim)
    levels = len(channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(text_config)
        unet = UNet2DConditionModel(
            sample_size=image_size // patch, in_channels=IMAGE_CHANNELS * patch * patch,
            out_channels=IMAGE_CHANNELS * patch * patch, block_out_channels=tuple(channels),
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
            layers_per_block=1, cross_attention_dim=text_dim, attention_head_dim=16,
            norm_num_groups=16, class_embed_type="projection",
            projection_class_embeddings_input_dim=text_dim)
    return FinexlTinyPipeline(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                              scheduler=build_scheduler(prediction_type))


def save_tiny_pipeline(pipe: FinexlTinyPipeline, out_dir: str | Path, *,
                       half: bool = False, keep: Sequence[str] = ()) -> Path:
    """Save ``pipe`` as a diffusers directory that ``load_pipeline`` reads by path.

    The directory is written beside ``out_dir`` and renamed into place, so an interrupted
    save never leaves half a model; an existing ``out_dir`` is replaced, except for the
    entries named in ``keep`` (e.g. checkpoint folders), which move into the new one.
    ``half=True`` stores float16 weights (half the size; loading casts back to the
    requested dtype).
    """
    import shutil
    import tempfile

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    staging.chmod(0o755)  # mkdtemp makes it private; a saved model is an ordinary folder
    try:
        if half:
            # A copy, so the caller's weights keep their precision.
            import copy

            pipe = copy.deepcopy(pipe)
            pipe.unet.half()
            pipe.text_encoder.half()
        pipe.save_pretrained(staging, safe_serialization=True)
        index_path = staging / "model_index.json"
        index = json.loads(index_path.read_text(encoding="utf-8"))
        index["tokenizer"] = ["transformers", _TOKENIZER_CLASS]
        index_path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        for entry in staging.rglob("*"):  # some writers create private files
            entry.chmod(0o755 if entry.is_dir() else 0o644)
        for name in keep:
            if (out_dir / name).exists():
                (out_dir / name).rename(staging / name)
        if out_dir.exists():
            trash = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old."))
            out_dir.rename(trash / "old")
            staging.rename(out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        for name in keep:  # put carried-over entries back before dropping the staging copy
            if (staging / name).exists() and out_dir.is_dir() and not (out_dir / name).exists():
                (staging / name).rename(out_dir / name)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def is_tiny_pipeline_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a saved ``FinexlTinyPipeline`` (by its ``model_index.json``)."""
    index = Path(path) / "model_index.json"
    try:
        return json.loads(index.read_text(encoding="utf-8")).get("_class_name") == \
            FinexlTinyPipeline.__name__
    except (OSError, ValueError, AttributeError):
        return False


def load_tiny_pipeline(path: str | Path = BUILTIN_DIR, *,
                       dtype: torch.dtype = torch.float32) -> FinexlTinyPipeline:
    """Load a saved tiny pipeline (the shipped one by default) on CPU in ``dtype``."""
    from finexl.generate.compat import dtype_argument as _dtype_argument

    pipe = FinexlTinyPipeline.from_pretrained(str(path), local_files_only=True,
                                              **{_dtype_argument(): dtype})
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Training objective -------------------------------------------------------------------------

@dataclass(frozen=True)
class NoisedBatch:
    """Clean images noised at random timesteps, with the target the UNet should predict."""

    clean: torch.Tensor  # (b, 3 p^2, h/p, w/p) in [-1, 1]
    noisy: torch.Tensor
    timesteps: torch.Tensor  # (b,) on the UNet's device
    target: torch.Tensor  # epsilon, v or the clean image, by the scheduler's prediction_type
    alpha_bar: torch.Tensor  # (b, 1, 1, 1)


def noise_clean(scheduler, clean: torch.Tensor, *, generator: torch.Generator) -> NoisedBatch:
    """Noise clean model inputs (pixels folded into patches, or VAE latents) as training
    does: a uniform timestep and Gaussian noise per image, both drawn from ``generator`` (in
    that order); the target follows ``scheduler.config.prediction_type``."""
    device, dtype = clean.device, clean.dtype
    batch = clean.shape[0]
    steps = scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (batch,), generator=generator)
    noise = torch.randn(clean.shape, generator=generator).to(device, dtype)
    alpha_bar = scheduler.alphas_cumprod[timesteps].to(device, dtype).view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise
    kind = scheduler.config.prediction_type
    if kind == "v_prediction":
        target = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * clean
    elif kind == "sample":
        target = clean
    else:
        target = noise
    return NoisedBatch(clean, noisy, timesteps.to(device), target, alpha_bar)


def noise_batch(pipe: FinexlTinyPipeline, pixels: torch.Tensor, *,
                generator: torch.Generator) -> NoisedBatch:
    """Noise ``pixels`` (``(b, 3, h, w)`` in [0, 1]) for the tiny model (:func:`noise_clean`)."""
    clean = pipe.patchify(pixels.to(pipe.unet.device, pipe.unet.dtype) * 2 - 1)
    return noise_clean(pipe.scheduler, clean, generator=generator)


def predicted_clean(scheduler, prediction: torch.Tensor, batch: NoisedBatch) -> torch.Tensor:
    """The clean input a prediction implies, whatever the model predicts."""
    kind = scheduler.config.prediction_type
    a, s = batch.alpha_bar.sqrt(), (1 - batch.alpha_bar).sqrt()
    if kind == "epsilon":
        return (batch.noisy - s * prediction) / a
    if kind == "v_prediction":
        return a * batch.noisy - s * prediction
    return prediction


def denoising_loss(scheduler, prediction: torch.Tensor, batch: NoisedBatch, *,
                   min_snr_gamma: float | None = 5.0, reduce: bool = True) -> torch.Tensor:
    """The (Min-SNR weighted) squared error of ``prediction`` against ``batch.target``;
    per image when ``reduce`` is false."""
    per_image = ((prediction.float() - batch.target.float()) ** 2).mean(dim=(1, 2, 3))
    if min_snr_gamma is not None:
        # Min-SNR weights the clean-image error by min(snr, gamma), whatever the target.
        snr = (batch.alpha_bar / (1 - batch.alpha_bar)).view(-1).float()
        weight = torch.clamp(snr, max=min_snr_gamma)
        kind = scheduler.config.prediction_type
        if kind == "v_prediction":
            weight = weight / (snr + 1)
        elif kind == "epsilon":
            weight = weight / snr.clamp(min=1e-8)
        per_image = per_image * weight
    return per_image.mean() if reduce else per_image


def diffusion_loss(pipe: FinexlTinyPipeline, pixels: torch.Tensor, captions: Sequence[str], *,
                   generator: torch.Generator, uncond_prob: float = 0.1,
                   min_snr_gamma: float | None = 5.0) -> torch.Tensor:
    """The denoising loss on a batch of images and captions (a scalar with gradients).

    Parameters
    ----------
    pipe
        The model; its scheduler's ``alphas_cumprod`` and ``prediction_type`` set the
        noise schedule and the target (epsilon or v).
    pixels
        Images in [0, 1], shape ``(batch, 3, height, width)``.
    captions
        One caption per image; each is replaced by ``""`` with probability ``uncond_prob``
        so classifier-free guidance keeps working.
    generator
        CPU generator for caption dropout, timesteps and noise.
    min_snr_gamma
        Min-SNR loss weighting (Hang et al. 2023), which speeds up training; ``None`` for
        the plain mean squared error.
    """
    batch = pixels.shape[0]
    drop = torch.rand(batch, generator=generator) < uncond_prob
    captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
    hidden, pooled = pipe.encode_prompt(captions)
    noised = noise_batch(pipe, pixels, generator=generator)
    prediction = pipe.denoise(noised.noisy, noised.timesteps, hidden, pooled)
    return denoising_loss(pipe.scheduler, prediction, noised, min_snr_gamma=min_snr_gamma)
