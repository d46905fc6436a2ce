"""Aligned image/text encoders: one protocol, one loader."""

from finexl.encoders.base import CachedEncoder, Encoder, unknown_concepts

__all__ = ["CachedEncoder", "Encoder", "unknown_concepts"]
