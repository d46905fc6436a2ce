"""The user branch: a user embedding ``e_u`` steers a diffusion UNet through its own tokens.

PrefGen's conditioning (PREFGEN.md §1.5) is IP-Adapter's decoupled cross-attention with the
user embedding in place of the CLIP image embedding::

    e_u --ImageProjection--> N user tokens
    out = Attn(Q, K_text, V_text) + λ · Attn(Q, K_user, V_user)      (every text cross-attention)

so it is built from diffusers' own parts: ``ImageProjection`` (Linear to N·D, LayerNorm) in
``unet.encoder_hid_proj``, ``IPAdapterAttnProcessor2_0`` on every cross-attention layer, the
UNet's ``added_cond_kwargs["image_embeds"]`` for the embedding, and the processors' ``scale``
for λ. A stock diffusers pipeline with ``load_ip_adapter`` reads the saved file
(:mod:`finexl.prefgen.loaders`) and takes ``e_u`` as ``ip_adapter_image_embeds``.

λ = 0 skips the user attention inside the processor, and the text path of
``IPAdapterAttnProcessor2_0`` is the same arithmetic as ``AttnProcessor2_0`` for layers
without query/key norms, so a UNet with the branch at λ = 0 gives the base model's output
bit for bit (tested). Layers with query/key norms (which that processor ignores) are
refused rather than silently changed.

Weights are keyed here by processor name (``…attn2.processor.to_k_ip.weight``) and by the
projector's module names (``image_proj.image_embeds.weight``); the stock file's numbered
keys exist only in :mod:`finexl.prefgen.loaders`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from finexl.errors import FinexlError

# diffusers' loader reads an ``ImageProjection`` file as exactly 4 tokens (it hard-codes the
# count for the ``proj.weight`` layout), so a stock-loadable branch has 4 user tokens.
NUM_USER_TOKENS = 4
BRANCH_FORMAT = "finexl-user-branch"
BRANCH_VERSION = 1
# Where a UNet keeps the processors it had before the branch, so unloading puts them back.
_ORIGINAL_PROCESSORS = "_finexl_processors_before_user_branch"


@dataclass(frozen=True)
class UserBranchConfig:
    """What a user branch was built for; saved beside its weights and checked on load.

    Attributes
    ----------
    embed_dim
        Length of the user embedding ``e_u`` the projector reads.
    cross_attention_dim
        Width of the UNet's text context (the user tokens have the same width).
    num_tokens
        User tokens per user (4: the count diffusers' stock loader assumes).
    base_model
        The generator the branch was trained on (``builtin:tiny``, a folder name, a hub id).
    prefgen_model
        Fingerprint of the PrefGen model whose profiles (``e_u``) it reads; ``None`` for a
        branch trained on stand-in embeddings.
    embedding_parts
        The layout of ``e_u`` as ``{part: length}`` in order (e.g. g_sem, e_core, e_img).
    training
        Free-form record of how it was trained (steps, data, losses), for the docs.
    """

    embed_dim: int
    cross_attention_dim: int
    num_tokens: int = NUM_USER_TOKENS
    base_model: str = "builtin:tiny"
    prefgen_model: str | None = None
    embedding_parts: dict[str, int] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    format: str = BRANCH_FORMAT
    version: int = BRANCH_VERSION

    def __post_init__(self) -> None:
        if self.num_tokens != NUM_USER_TOKENS:
            raise FinexlError(f"a user branch has {NUM_USER_TOKENS} user tokens (the count"
                              f" diffusers' IP-Adapter loader reads), not {self.num_tokens}")
        if self.embed_dim < 1 or self.cross_attention_dim < 1:
            raise FinexlError(f"user branch sizes must be positive, got embed_dim"
                              f" {self.embed_dim} and cross_attention_dim"
                              f" {self.cross_attention_dim}")
        if self.embedding_parts and sum(self.embedding_parts.values()) != self.embed_dim:
            raise FinexlError(f"the user embedding parts {self.embedding_parts} add up to"
                              f" {sum(self.embedding_parts.values())}, not embed_dim"
                              f" {self.embed_dim}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "user branch config") -> UserBranchConfig:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise FinexlError(f"{source} is not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != BRANCH_FORMAT:
            raise FinexlError(f"{source} is not a finexl user branch config (no"
                              f" format={BRANCH_FORMAT!r})")
        if data.get("version") != BRANCH_VERSION:
            raise FinexlError(f"{source} is user branch version {data.get('version')!r}; this"
                              f" finexl reads version {BRANCH_VERSION}")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise FinexlError(f"{source} is missing a field ({exc})") from exc


# The UNet -----------------------------------------------------------------------------------

def unet_of(target: Any):
    """The ``UNet2DConditionModel`` of a pipeline, or ``target`` itself if it is one."""
    from diffusers import UNet2DConditionModel

    if isinstance(target, UNet2DConditionModel):
        return target
    unet = getattr(target, "unet", None)
    if isinstance(unet, UNet2DConditionModel):
        return unet
    raise FinexlError(f"{type(target).__name__} has no UNet2DConditionModel; the user branch"
                      f" works on Stable Diffusion 1.x/2.x/XL-style UNets and builtin:tiny")


def cross_attention_names(unet) -> list[str]:
    """Processor names of the text cross-attention layers, in ``attn_processors`` order.

    The same rule as diffusers' IP-Adapter loader: every processor except self-attention
    (``attn1``) and motion modules.
    """
    return [name for name in unet.attn_processors
            if not name.endswith("attn1.processor") and "motion_modules" not in name]


def _attention(unet, processor_name: str):
    return unet.get_submodule(processor_name.rsplit(".processor", 1)[0])


def has_user_branch(target: Any) -> bool:
    """Whether the UNet of ``target`` has a user (IP-Adapter) branch installed."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    unet = unet_of(target)
    return unet.encoder_hid_proj is not None and any(
        isinstance(p, IPAdapterAttnProcessor2_0) for p in unet.attn_processors.values())


def check_unet(unet, config: UserBranchConfig) -> None:
    """Refuse a UNet the branch does not fit (sizes, norms the processor would skip)."""
    names = cross_attention_names(unet)
    if not names:
        raise FinexlError("this UNet has no cross-attention layer to put a user branch beside")
    width = unet.config.cross_attention_dim
    if isinstance(width, (list, tuple)):
        width = width[0] if len(set(width)) == 1 else None
    if width != config.cross_attention_dim:
        raise FinexlError(f"the user branch was made for text width"
                          f" {config.cross_attention_dim}, but this model's is {width}; was it"
                          f" trained for another base model ({config.base_model})?")
    for name in names:
        attn = _attention(unet, name)
        if attn.norm_q is not None or attn.norm_k is not None:
            raise FinexlError(f"{name} normalises queries/keys, which diffusers' IP-Adapter"
                              f" processor skips; the user branch cannot keep this model's"
                              f" output unchanged at scale 0")
    if unet.encoder_hid_proj is not None and not has_user_branch(unet):
        raise FinexlError("this UNet already projects its context (encoder_hid_proj); a user"
                          " branch cannot be added to it")


def initial_state_dict(unet, config: UserBranchConfig, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights of a new branch, keyed by processor name: ``to_k_ip``/``to_v_ip`` copied from
    each layer's text ``to_k``/``to_v`` (IP-Adapter's initialisation, so the user tokens
    start in the text tokens' key/value space) and a randomly initialised projector."""
    from diffusers.models.embeddings import ImageProjection

    check_unet(unet, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        projector = ImageProjection(image_embed_dim=config.embed_dim,
                                    cross_attention_dim=config.cross_attention_dim,
                                    num_image_text_embeds=config.num_tokens)
    state = {f"image_proj.{k}": v.detach().clone().float()
             for k, v in projector.state_dict().items()}
    for name in cross_attention_names(unet):
        attn = _attention(unet, name)
        state[f"{name}.to_k_ip.weight"] = attn.to_k.weight.detach().clone().float()
        state[f"{name}.to_v_ip.weight"] = attn.to_v.weight.detach().clone().float()
    return state


def install_user_branch(target: Any, state: dict[str, torch.Tensor], config: UserBranchConfig,
                        *, scale: float = 1.0) -> None:
    """Put a branch with weights ``state`` (keyed by processor name) on the UNet of ``target``.

    Installation is diffusers' own IP-Adapter loading (processors, ``encoder_hid_proj``,
    ``encoder_hid_dim_type``); the processors the UNet had before are kept so that
    :func:`unload_user_branch` restores exactly them. A branch already on the UNet is
    replaced.
    """
    unet = unet_of(target)
    if has_user_branch(unet):
        unload_user_branch(unet)
    check_unet(unet, config)
    originals = dict(unet.attn_processors)
    stock = to_stock_layout(state, unet)
    grouped = {"image_proj": {}, "ip_adapter": {}}
    for key, value in stock.items():
        group, _, rest = key.partition(".")
        grouped[group][rest] = value
    unet._load_ip_adapter_weights([grouped], low_cpu_mem_usage=False)
    setattr(unet, _ORIGINAL_PROCESSORS, originals)
    set_user_branch_scale(unet, scale)


def attach_user_branch(target: Any, config: UserBranchConfig, *, scale: float = 1.0,
                       seed: int = 0) -> None:
    """Add a new, untrained branch (see :func:`initial_state_dict`) to ``target``'s UNet."""
    unet = unet_of(target)
    install_user_branch(unet, initial_state_dict(unet, config, seed=seed), config, scale=scale)


def user_branch_state_dict(target: Any) -> dict[str, torch.Tensor]:
    """The branch's weights keyed by processor name (see the module docstring)."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    unet = unet_of(target)
    if not has_user_branch(unet):
        raise FinexlError("this model has no user branch")
    projector = unet.encoder_hid_proj.image_projection_layers[0]
    state = {f"image_proj.{k}": v.detach().clone() for k, v in projector.state_dict().items()}
    processors = unet.attn_processors
    for name in cross_attention_names(unet):
        processor = processors[name]
        if not isinstance(processor, IPAdapterAttnProcessor2_0):
            raise FinexlError(f"{name} has no user branch ({type(processor).__name__})")
        state[f"{name}.to_k_ip.weight"] = processor.to_k_ip[0].weight.detach().clone()
        state[f"{name}.to_v_ip.weight"] = processor.to_v_ip[0].weight.detach().clone()
    return state


def copy_branch_weights(target: Any, state: dict[str, torch.Tensor]) -> None:
    """Overwrite the installed branch's weights in place (the parameter objects stay, so an
    optimizer holding them keeps working: resuming a training run)."""
    unet = unet_of(target)
    current = user_branch_state_dict(unet)
    if current.keys() != state.keys():
        raise FinexlError("the saved user branch has other layers than the installed one")
    projector = unet.encoder_hid_proj.image_projection_layers[0]
    processors = unet.attn_processors
    with torch.no_grad():
        for key, value in state.items():
            if key.startswith("image_proj."):
                target_param = projector.get_parameter(key[len("image_proj."):])
            else:
                name, _, leaf = key.rpartition(".to_")
                module = getattr(processors[name], f"to_{leaf.split('.')[0]}")[0]
                target_param = module.weight
            target_param.copy_(value)


def trainable_parameters(target: Any) -> list[torch.nn.Parameter]:
    """The branch's parameters (projector, ``to_k_ip``, ``to_v_ip``) as a list.

    A list, not a generator: the optimizer and gradient clipping both walk it (diffusers'
    scripts pass a ``filter`` iterator that the optimizer uses up, so clipping clips nothing).
    """
    unet = unet_of(target)
    if not has_user_branch(unet):
        raise FinexlError("this model has no user branch to train")
    params = list(unet.encoder_hid_proj.parameters())
    processors = unet.attn_processors
    for name in cross_attention_names(unet):
        params += list(processors[name].to_k_ip.parameters())
        params += list(processors[name].to_v_ip.parameters())
    return params


def set_user_branch_scale(target: Any, scale: float | dict | list) -> None:
    """Set λ on a UNet or a pipeline: a float, a per-block dict (``{"up": {"block_0": …}}``)
    or a list with one entry per adapter, exactly as diffusers' ``set_ip_adapter_scale``.

    diffusers has that method only on pipelines; its body reads nothing but ``.unet``, so it
    is run here on a stand-in holding the bare UNet rather than rewritten.
    """
    from diffusers.loaders import IPAdapterMixin

    unet = unet_of(target)
    if not has_user_branch(unet):
        raise FinexlError("this model has no user branch; load one before setting its scale")
    IPAdapterMixin.set_ip_adapter_scale(SimpleNamespace(unet=unet), scale)


def unload_user_branch(target: Any) -> None:
    """Remove the branch and put back the processor objects the UNet had before it."""
    unet = unet_of(target)
    originals = getattr(unet, _ORIGINAL_PROCESSORS, None)
    unet.encoder_hid_proj = None
    unet.register_to_config(encoder_hid_dim_type=None)
    if originals is None:  # installed by stock load_ip_adapter: fresh default processors
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor({name: AttnProcessor2_0() for name in unet.attn_processors})
        return
    # set_attn_processor pops entries from the dict it is given; hand it a copy.
    unet.set_attn_processor(dict(originals))
    delattr(unet, _ORIGINAL_PROCESSORS)


# Inputs -------------------------------------------------------------------------------------

def as_embedding_batch(user_embedding, batch: int, *, dtype=torch.float32,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """``e_u`` (1-D, or one row per image) as the ``(batch, 1, dim)`` tensor diffusers takes."""
    tensor = torch.as_tensor(user_embedding, dtype=dtype, device=device)
    if tensor.ndim == 1:
        tensor = tensor.expand(batch, -1)
    if tensor.ndim != 2 or tensor.shape[0] != batch:
        raise ValueError(f"user embedding of shape {tuple(tensor.shape)} does not fit a batch of"
                         f" {batch}")
    return tensor[:, None, :]


def unet_user_inputs(user_embedding: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """The ``added_cond_kwargs`` a bare UNet with a branch needs: ``{"image_embeds": [...]}``."""
    if user_embedding.ndim == 2:
        user_embedding = user_embedding[:, None, :]
    return {"image_embeds": [user_embedding]}


def pipeline_user_embeds(user_embedding, batch: int, *, guided: bool, dtype=torch.float32,
                         device: str | torch.device = "cpu",
                         null_embedding=None) -> list[torch.Tensor]:
    """``ip_adapter_image_embeds`` for a pipeline call of ``batch`` images.

    With classifier-free guidance the null half comes first, the convention of diffusers'
    pipelines: ``null_embedding`` (one row, or one per image: the anti-user, which guidance
    then moves away from) or, when None, zeros, which training used for "no user".
    """
    embeds = as_embedding_batch(user_embedding, batch, dtype=dtype, device=device)
    if guided:
        null = (torch.zeros_like(embeds) if null_embedding is None else
                as_embedding_batch(null_embedding, batch, dtype=dtype, device=device))
        embeds = torch.cat([null, embeds])
    return [embeds]


# The stock IP-Adapter file layout (``prefgen.loaders`` reads and writes the file) ----------

# ImageProjection's module names in diffusers and in the IP-Adapter file layout.
_PROJECTOR_NAMES = (("image_embeds.", "proj."), ("norm.", "norm."))


def _stock_ids(unet) -> dict[str, int]:
    """Processor name -> the number diffusers' loader gives it (1, 3, 5, …)."""
    return {name: 1 + 2 * k for k, name in enumerate(cross_attention_names(unet))}


def to_stock_layout(state: dict[str, torch.Tensor], unet) -> dict[str, torch.Tensor]:
    """Weights keyed by processor name -> the stock file's flat numbered keys."""
    ids = _stock_ids(unet)
    stock = {}
    for key, value in state.items():
        if key.startswith("image_proj."):
            stock["image_proj." + _rename(key[len("image_proj."):], 0, 1)] = value
            continue
        name, _, leaf = key.rpartition(".to_")
        if name not in ids or leaf not in ("k_ip.weight", "v_ip.weight"):
            raise FinexlError(f"user branch weight {key!r} names no cross-attention layer of"
                              f" this UNet")
        stock[f"ip_adapter.{ids[name]}.to_{leaf}"] = value
    missing = [n for n in ids if f"{n}.to_k_ip.weight" not in state]
    if missing:
        raise FinexlError(f"user branch weights miss {len(missing)} cross-attention layers of"
                          f" this UNet (first: {missing[0]})")
    return stock


def from_stock_layout(stock: dict[str, torch.Tensor], unet) -> dict[str, torch.Tensor]:
    """The stock file's numbered keys -> weights keyed by processor name, checked to fit."""
    names = {number: name for name, number in _stock_ids(unet).items()}
    numbers = {int(k.split(".")[1]) for k in stock if k.startswith("ip_adapter.")}
    if numbers != set(names):
        raise FinexlError(f"the user branch file has cross-attention layers {sorted(numbers)[:6]}…"
                          f" but this UNet has {len(names)} ({sorted(names)[:6]}…); it was made"
                          f" for another base model")
    state = {}
    for key, value in stock.items():
        group, _, rest = key.partition(".")
        if group == "image_proj":
            state["image_proj." + _rename(rest, 1, 0)] = value
        elif group == "ip_adapter":
            number, _, leaf = rest.partition(".")
            if leaf not in ("to_k_ip.weight", "to_v_ip.weight"):
                raise FinexlError(f"user branch file has an unexpected weight {key!r}")
            state[f"{names[int(number)]}.{leaf}"] = value
        else:
            raise FinexlError(f"user branch file has a weight outside image_proj/ip_adapter:"
                              f" {key!r}")
    return state


def _rename(key: str, source: int, target: int) -> str:
    for pair in _PROJECTOR_NAMES:
        if key.startswith(pair[source]):
            return pair[target] + key[len(pair[source]):]
    raise FinexlError(f"user branch projector weight {key!r} is not part of an ImageProjection")
