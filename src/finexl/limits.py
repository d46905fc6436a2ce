"""Size bounds on everything a user or a service hands finexl, checked before any work.

A hostile or broken input (a 50 MB prompt line, a 12000x12000 PNG, an endless VLM answer)
must cost one clear error line, not gigabytes of memory. Each bound has a default here and
an environment variable that overrides it (read at each check, so a test or a user can
lower or raise it):

=========================  ===========================  ==============================
bound                      default                      environment variable
=========================  ===========================  ==============================
decoded image size         50,000,000 pixels            ``FINEXL_MAX_IMAGE_PIXELS``
prompt / caption           4,000 characters             ``FINEXL_MAX_PROMPT_CHARS``
concept phrase             200 characters               ``FINEXL_MAX_CONCEPT_CHARS``
VLM answer text            100,000 characters           ``FINEXL_MAX_VLM_ANSWER_CHARS``
VLM HTTP response body     2,000,000 bytes              ``FINEXL_MAX_VLM_RESPONSE_BYTES``
text file (JSONL, lists)   200,000,000 bytes            ``FINEXL_MAX_TEXT_FILE_BYTES``
liked or disliked images   256 per user                 ``FINEXL_MAX_PREFERENCE_IMAGES``
user profile file          64,000,000 bytes             ``FINEXL_MAX_PROFILE_BYTES``
=========================  ===========================  ==============================

50 megapixels admits a 48 MP phone photo and an 8K frame; it decodes to 150 MB of RGB.
Images are decoded one at a time and shrunk at once to ``WORKING_SIDE`` on their shorter
side (``finexl.pairs.load_image_bounded``), so a batch never holds full-size images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from finexl.errors import FinexlError


@dataclass(frozen=True)
class Bound:
    """One documented limit: its default, the variable that overrides it, and its unit."""

    name: str
    default: int
    env: str
    unit: str

    def value(self) -> int:
        """The limit now: the environment variable when set (a positive integer), else the default."""
        raw = os.environ.get(self.env)
        if raw is None or not raw.strip():
            return self.default
        try:
            value = int(raw.replace("_", "").strip())
        except ValueError:
            value = 0
        if value < 1:
            raise FinexlError(f"{self.env}={raw!r} is not a positive whole number; set it to the"
                              f" largest {self.name} in {self.unit} to accept, or unset it"
                              f" (default {self.default:,})")
        return value


MAX_IMAGE_PIXELS = Bound("image size", 50_000_000, "FINEXL_MAX_IMAGE_PIXELS", "pixels")
MAX_PROMPT_CHARS = Bound("prompt", 4_000, "FINEXL_MAX_PROMPT_CHARS", "characters")
MAX_CONCEPT_CHARS = Bound("concept", 200, "FINEXL_MAX_CONCEPT_CHARS", "characters")
MAX_VLM_ANSWER_CHARS = Bound("VLM answer", 100_000, "FINEXL_MAX_VLM_ANSWER_CHARS", "characters")
MAX_VLM_RESPONSE_BYTES = Bound("VLM response", 2_000_000, "FINEXL_MAX_VLM_RESPONSE_BYTES",
                               "bytes")
MAX_TEXT_FILE_BYTES = Bound("text file", 200_000_000, "FINEXL_MAX_TEXT_FILE_BYTES", "bytes")

# A person's liked (or disliked) images are read together into memory (at the working size):
# "2-16 work best", so 256 is generous and keeps one user under ~200 MB.
MAX_PREFERENCE_IMAGES = Bound("number of liked or disliked images", 256,
                              "FINEXL_MAX_PREFERENCE_IMAGES", "images")
# A ``*.user.safetensors`` profile holds a few vectors (kilobytes); its tensors are read
# whole, so a file of gigabytes is refused from its size first.
MAX_PROFILE_BYTES = Bound("user profile", 64_000_000, "FINEXL_MAX_PROFILE_BYTES", "bytes")

ALL_BOUNDS = (MAX_IMAGE_PIXELS, MAX_PROMPT_CHARS, MAX_CONCEPT_CHARS, MAX_VLM_ANSWER_CHARS,
              MAX_VLM_RESPONSE_BYTES, MAX_TEXT_FILE_BYTES, MAX_PREFERENCE_IMAGES,
              MAX_PROFILE_BYTES)

# Images are kept at most this many pixels on their shorter side once decoded: above every
# image encoder's input (CLIP 224/336, SigLIP 384, EVA 448), so an encoder sees what it would
# have seen, and a decoded 50 MP photo shrinks from 150 MB to about 1 MB at once. Images
# already this small are kept exactly as decoded.
WORKING_SIDE = 512


def check_text_length(text: str, bound: Bound, where: str) -> str:
    """``text`` unchanged if it is at most ``bound`` characters, else a one-line FinexlError.

    Parameters
    ----------
    text
        A prompt, caption, concept or answer.
    bound
        ``MAX_PROMPT_CHARS``, ``MAX_CONCEPT_CHARS`` or ``MAX_VLM_ANSWER_CHARS``.
    where
        Names the file and line (or option) the text came from, for the message.
    """
    limit = bound.value()
    if len(text) > limit:
        raise FinexlError(f"{where}: the {bound.name} is {len(text):,} characters long, over the"
                          f" limit of {limit:,} ({bound.env}); shorten it, or raise the limit")
    return text


def check_file_size(path: str | Path, what: str, bound: Bound = MAX_TEXT_FILE_BYTES) -> int:
    """The size of ``path`` in bytes, or a one-line FinexlError when it exceeds ``bound``.

    Checked from ``stat`` before a byte is read, so a huge file costs nothing.
    """
    size = os.stat(path).st_size
    limit = bound.value()
    if size > limit:
        raise FinexlError(f"{what} {path} is {size:,} bytes, over the limit of {limit:,} for a"
                          f" {bound.name} ({bound.env}); split it or raise the limit")
    return size


def check_count(count: int, bound: Bound, where: str) -> int:
    """``count`` unchanged if it is at most ``bound``, else a one-line FinexlError."""
    limit = bound.value()
    if count > limit:
        raise FinexlError(f"{where}: {count:,} is over the limit of {limit:,} for the"
                          f" {bound.name} ({bound.env}); use fewer, or raise the limit")
    return count
