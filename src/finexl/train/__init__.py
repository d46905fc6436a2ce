"""Training the embedded ``mini`` encoder (needs the ``train`` extra: scikit-image, scikit-learn)."""
