"""PrefGen: personalize the generator from liked and disliked images (see docs/PREFGEN.md)."""
