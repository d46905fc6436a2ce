"""finexl: explain how a personalized image generator differs from its base model.

>>> import finexl                                                   # doctest: +SKIP
>>> result = finexl.explain("out/base", "out/lora")                  # shipped defaults
>>> for c in result.concepts: print(c.concept, round(c.weight, 2), c.ci95)
"""

from __future__ import annotations

__version__ = "0.1.0"

# Public names resolve lazily, so `import finexl` and `finexl --help` stay fast.
_EXPORTS = {
    "explain": "finexl.pipeline",
    "ExplainConfig": "finexl.pipeline",
    "Explanation": "finexl.results",
    "Decomposer": "finexl.decompose",
    "decompose": "finexl.decompose",
    "load_encoder": "finexl.encoders.loader",
    "load_pairs": "finexl.pairs",
    "FinexlError": "finexl.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'finexl' has no attribute {name!r}")
