"""Differences between diffusers releases, in one place (imported by the loader and the
tiny model alike, so neither has to import the other)."""

from __future__ import annotations


def dtype_argument() -> str:
    """The keyword ``from_pretrained`` takes for the dtype in this diffusers release."""
    # diffusers deprecated from_pretrained's torch_dtype for dtype; older releases lack it.
    try:
        from diffusers.utils.deprecation_utils import _TORCH_DTYPE_DEPRECATION_MESSAGE  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"
