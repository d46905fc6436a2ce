"""finexl: explain how a personalized image generator differs from its base model."""

__version__ = "0.1.0"
