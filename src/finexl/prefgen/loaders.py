"""The user branch on disk: one safetensors file in diffusers' stock IP-Adapter layout.

The file has flat keys ``image_proj.proj.*`` / ``image_proj.norm.*`` (the ``ImageProjection``
layout) and ``ip_adapter.<n>.to_k_ip.weight`` / ``….to_v_ip.weight``, where ``n`` is 1, 3,
5, … for the first, second, third … cross-attention processor in ``unet.attn_processors``
order — the numbering diffusers' loader walks. So a plain diffusers pipeline reads it::

    pipe.load_ip_adapter(folder, subfolder="", weight_name=USER_BRANCH_WEIGHTS,
                         image_encoder_folder=None)
    pipe(prompt, ip_adapter_image_embeds=[torch.cat([zeros, e_u])[:, None]])  # CFG: null first

The branch's :class:`~finexl.prefgen.user_branch.UserBranchConfig` is written twice: as
``user_branch_config.json`` beside the weights and in the safetensors metadata, so the file
alone is enough. Numbered keys exist only here; everywhere else the weights are keyed by
processor name, and the conversion is checked against the UNet it is for (a file for
another UNet is an error, never a silent mis-assignment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from finexl.errors import FinexlError
from finexl.prefgen.user_branch import (  # the layout conversion lives with the processors
    UserBranchConfig,
    from_stock_layout,
    install_user_branch,
    to_stock_layout,
    unet_of,
    user_branch_state_dict,
)

USER_BRANCH_WEIGHTS = "prefgen_user_branch.safetensors"
USER_BRANCH_CONFIG = "user_branch_config.json"
_METADATA_KEY = "finexl_user_branch_config"


def save_user_branch(target: Any, out_dir: str | Path, config: UserBranchConfig, *,
                     weight_name: str = USER_BRANCH_WEIGHTS) -> Path:
    """Write the branch of ``target`` (a UNet or pipeline) into ``out_dir``; returns the file.

    Both files are written atomically (temporary file, then rename).
    """
    from safetensors.torch import save

    from finexl.store.files import write_atomic

    unet = unet_of(target)
    stock = to_stock_layout(user_branch_state_dict(unet), unet)
    stock = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in stock.items()}
    out_dir = Path(out_dir)
    text = config.to_json()
    write_atomic(out_dir / weight_name, save(stock, metadata={_METADATA_KEY: text}))
    write_atomic(out_dir / USER_BRANCH_CONFIG, (text + "\n").encode("utf-8"))
    return out_dir / weight_name


def branch_file(path: str | Path) -> Path:
    """The weights file named by ``path`` (the file, or a folder holding it)."""
    from finexl.generate.pipelines import weights_file

    named = Path(path).expanduser()
    shown = named / USER_BRANCH_WEIGHTS if named.is_dir() else named
    return weights_file(named, USER_BRANCH_WEIGHTS,
                        f"user branch {shown} does not exist; pass a {USER_BRANCH_WEIGHTS} file"
                        f" or the folder holding it")


def read_user_branch(path: str | Path) -> tuple[dict[str, torch.Tensor], UserBranchConfig]:
    """The stock-layout weights and the config of a saved branch (file or folder)."""
    from safetensors import SafetensorError, safe_open

    path = branch_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            stock = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise FinexlError(f"user branch {path} cannot be read as safetensors ({exc}); is the"
                          f" file complete?") from exc
    if _METADATA_KEY in metadata:
        config = UserBranchConfig.from_json(metadata[_METADATA_KEY], source=str(path))
    elif (path.parent / USER_BRANCH_CONFIG).is_file():
        source = path.parent / USER_BRANCH_CONFIG
        config = UserBranchConfig.from_json(source.read_text(encoding="utf-8"), source=str(source))
    else:
        raise FinexlError(f"user branch {path} has no config (no {USER_BRANCH_CONFIG} beside it"
                          f" and none in its metadata)")
    return stock, config


def load_user_branch(target: Any, path: str | Path, *, scale: float = 1.0) -> UserBranchConfig:
    """Install the branch saved at ``path`` on ``target`` (a UNet or a pipeline) at λ=``scale``.

    Raises
    ------
    FinexlError
        A missing or unreadable file, or a branch made for another UNet.
    """
    stock, config = read_user_branch(path)
    unet = unet_of(target)
    state = from_stock_layout(stock, unet)
    install_user_branch(unet, state, config, scale=scale)
    return config


def read_config(path: str | Path) -> UserBranchConfig:
    """Only the config of a saved branch (its metadata; no tensors are read)."""
    from safetensors import SafetensorError, safe_open

    path = branch_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(_METADATA_KEY)
    except (SafetensorError, OSError) as exc:
        raise FinexlError(f"user branch {path} cannot be read as safetensors ({exc})") from exc
    if text is None:
        return read_user_branch(path)[1]
    return UserBranchConfig.from_json(text, source=str(path))

