"""Aligned image/text encoders: one protocol, one loader."""

from finexl.encoders.base import CachedEncoder, Encoder
from finexl.encoders.loader import load_encoder

__all__ = ["CachedEncoder", "Encoder", "load_encoder"]
