"""Talking to an OpenAI-compatible chat-completions server that accepts images.

OpenAI, vLLM, Ollama, LM Studio and the llama.cpp server all accept
``POST {url}/chat/completions`` with ``image_url`` parts holding base64 data URLs. This
module owns the wire: encoding images, the request body, time-outs, retries with
exponential back-off and jitter (honouring ``Retry-After``), the request budget, and the
errors a user can act on. The API key travels only in the ``Authorization`` header; it is
never logged, and any server text quoted in a message has it masked.
"""

from __future__ import annotations

import base64
import email.utils
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import numpy as np

from finexl.concepts.normalize import MAX_WORDS
from finexl.concepts.templates import DEFAULT_TEMPLATE, get_template
from finexl.errors import FinexlError

if TYPE_CHECKING:
    from finexl.concepts.templates import PromptTemplate

logger = logging.getLogger(__name__)

KEY_ENVS = ("FINEXL_VLM_API_KEY", "OPENAI_API_KEY")
RETRIED_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
CHECK_SETTINGS = "--vlm-url / FINEXL_VLM_URL and --vlm-model / FINEXL_VLM_MODEL"
DEFAULT_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o"
URL_ENV = "FINEXL_VLM_URL"
MODEL_ENV = "FINEXL_VLM_MODEL"
IMAGE_FORMATS = ("png", "jpeg")


def safe_url(url: str) -> str:
    """``url`` without any ``user:password@`` part, for messages and reports."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()


@dataclass(frozen=True)
class VlmConfig:
    """Where the VLM is and how to ask it (``--vlm-*`` options; defaults from the environment)."""

    url: str = field(default_factory=lambda: os.environ.get(URL_ENV) or DEFAULT_URL)
    model: str = field(default_factory=lambda: os.environ.get(MODEL_ENV) or DEFAULT_MODEL)
    # None: read FINEXL_VLM_API_KEY, then OPENAI_API_KEY, when a request is due.
    api_key: str | None = field(default=None, repr=False, compare=False)
    pairs: int = 8  # image pairs shown, one request each (the paper's "multiple times")
    max_requests: int = 16  # cap on HTTP requests per propose(), retries included
    timeout: float = 60.0  # seconds per request
    retries: int = 4  # further attempts after a 429, 5xx, time-out or connection error
    backoff: float = 1.0  # first back-off in seconds; doubles each retry, with jitter
    backoff_max: float = 30.0  # longest single wait, also caps Retry-After
    max_side: int = 512  # images are shrunk so their long side is at most this
    image_format: str = "png"  # or "jpeg" (smaller requests)
    temperature: float = 0.0
    max_tokens: int | None = 300  # None leaves the answer length to the server
    template: str = DEFAULT_TEMPLATE  # a name in finexl.concepts.templates.TEMPLATES
    seed: int | None = None  # None: evenly spaced pairs; an int: a seeded random sample
    max_words: int = MAX_WORDS  # longer phrases are dropped

    def check(self) -> None:
        """``FinexlError`` naming the option for any value that cannot work."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FinexlError(f"--vlm-url {self.url!r} is not an http(s) URL; expected e.g. "
                              f"{DEFAULT_URL} or http://127.0.0.1:11434/v1")
        if not self.model.strip():
            raise FinexlError("--vlm-model is empty; name a vision model the server serves")
        for option, value in (("--vlm-pairs", self.pairs), ("--vlm-max-requests", self.max_requests),
                              ("max_side", self.max_side)):
            if value < 1:
                raise FinexlError(f"{option} must be at least 1, got {value}")
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0 or self.backoff_max < 0:
            raise FinexlError("VLM timeout must be positive and retries and back-off not negative")
        if self.image_format not in IMAGE_FORMATS:
            raise FinexlError(f"VLM image format {self.image_format!r} is not one of "
                              f"{', '.join(IMAGE_FORMATS)}")
        get_template(self.template)

    def resolved_api_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        return next((os.environ[name] for name in KEY_ENVS if os.environ.get(name)), None)

    def describe(self) -> dict[str, Any]:
        """Settings safe to show in a report (no key, no credentials in the URL)."""
        template = get_template(self.template)
        return {"vlm_url": safe_url(self.url), "vlm_model": self.model, "vlm_pairs": self.pairs,
                "vlm_max_requests": self.max_requests, "vlm_template": template.name,
                "vlm_template_version": template.version, "vlm_temperature": self.temperature}


class PairFailure(Exception):
    """One image pair got no usable answer; the proposer counts it and goes on."""

    def __init__(self, reason: str, *, unreachable: bool = False, capped: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable  # the server could not be reached at all
        self.capped = capped  # the request budget ran out


def encode_image(path: Path, max_side: int, image_format: str = "png") -> str:
    """A ``data:`` URL of the image at ``path``, shrunk so its long side is <= ``max_side``.

    Transparent images are flattened onto white (a VLM sees RGB); images are never enlarged.
    """
    from PIL import Image, ImageOps

    from finexl.imaging.decode import open_image_bounded

    with open_image_bounded(path) as opened:  # regular file, within the pixel limit
        image = ImageOps.exif_transpose(opened)
        image.load()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG", optimize=False)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/{image_format};base64,{encoded}"


def build_request(config: VlmConfig, template: PromptTemplate, base_url: str,
                  personal_url: str) -> dict[str, Any]:
    """The chat-completions body for one (base, personalized) pair."""
    content = [
        {"type": "text", "text": template.text},
        {"type": "text", "text": template.first_label},
        {"type": "image_url", "image_url": {"url": base_url}},
        {"type": "text", "text": template.second_label},
        {"type": "image_url", "image_url": {"url": personal_url}},
    ]
    body: dict[str, Any] = {
        "model": config.model,
        "messages": [{"role": "user", "content": content}],
        "temperature": config.temperature,
    }
    if config.max_tokens is not None:
        body["max_tokens"] = config.max_tokens
    return body


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class ChatSession:
    """One HTTP client, one request budget, shared by every pair of one ``propose`` call.

    ``max_requests`` counts every HTTP request, retries included, so a flaky server cannot
    multiply the bill. Cached answers cost nothing and are not counted.
    """

    def __init__(self, config: VlmConfig, api_key: str | None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import httpx

        self.config = config
        self.endpoint = config.url.rstrip("/") + "/chat/completions"
        self.safe_endpoint = safe_url(self.endpoint)
        self._api_key = api_key
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(timeout=httpx.Timeout(config.timeout), headers=headers)
        self._sleep = sleep
        # Jitter only spreads retries of concurrent clients; it never changes a result,
        # so it draws from fresh OS entropy rather than the run's seed.
        self._rng = np.random.default_rng()
        self.requests_made = 0

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def exhausted(self) -> bool:
        return self.requests_made >= self.config.max_requests

    def complete(self, body: dict[str, Any]) -> str:
        """The text of the first choice, after retries; ``PairFailure`` or ``FinexlError``."""
        import httpx

        reason = "no request made"
        for attempt in range(self.config.retries + 1):
            if self.exhausted:
                raise PairFailure(f"request cap reached after {reason}" if attempt else
                                  "request cap reached", capped=True)
            self.requests_made += 1
            retry_after = None
            try:
                response = self._post(body)
            except httpx.TimeoutException:
                reason, unreachable = f"timeout after {self.config.timeout:g} s", False
            except httpx.TransportError as exc:
                reason, unreachable = f"connection error ({type(exc).__name__})", True
            else:
                unreachable = False
                if response.status_code == 200:
                    return self._content_of(response)
                reason = self._check_status(response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            logger.debug("VLM request %d to %s failed (%s)", self.requests_made, self.safe_endpoint,
                         reason)
            if attempt < self.config.retries and not self.exhausted:
                self._sleep(self._delay(attempt, retry_after))
        raise PairFailure(reason, unreachable=unreachable)

    def _post(self, body: dict[str, Any]) -> Any:
        """POST ``body`` and read the response, at most ``MAX_VLM_RESPONSE_BYTES`` of it: a
        server that streams without end costs one bounded buffer and a ``PairFailure``."""
        import httpx

        from finexl.limits import MAX_VLM_RESPONSE_BYTES

        limit = MAX_VLM_RESPONSE_BYTES.value()
        with self._client.stream("POST", self.endpoint, json=body) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise PairFailure(f"response over {limit:,} bytes"
                                      f" ({MAX_VLM_RESPONSE_BYTES.env}); not read further")
                chunks.append(chunk)
        # The bytes are already decoded (gzip counts as what it expands to), so the copy
        # drops the headers that would make httpx decode them again.
        headers = [(key, value) for key, value in response.headers.multi_items()
                   if key.lower() not in ("content-encoding", "content-length",
                                          "transfer-encoding")]
        return httpx.Response(response.status_code, headers=headers,
                              content=b"".join(chunks), request=response.request)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.config.backoff_max)
        ceiling = min(self.config.backoff_max, self.config.backoff * 2.0 ** attempt)
        return float(ceiling * (0.5 + 0.5 * self._rng.random()))

    def _check_status(self, response: Any) -> str:
        """The retryable reason for ``response``; raises for answers retrying cannot fix."""
        status = response.status_code
        url = safe_url(self.config.url)
        if status in (401, 403):
            # The body is not quoted: OpenAI echoes part of a wrong key in it.
            raise FinexlError(
                f"the VLM server at {url} refused the request (HTTP {status}): check the API key "
                f"in {' or '.join(KEY_ENVS)} and that --vlm-url / FINEXL_VLM_URL is the server "
                f"you meant")
        if status == 404:
            raise FinexlError(
                f"the VLM server answered HTTP 404 for model {self.config.model!r} at "
                f"{self.safe_endpoint}: the model name or the URL is wrong; check {CHECK_SETTINGS} "
                f"(the URL should end where /chat/completions can be appended, e.g. .../v1)")
        reason = f"HTTP {status}"
        if status in RETRIED_STATUSES:
            return reason
        raise PairFailure(f"{reason}: {self._server_message(response)}")

    def _server_message(self, response: Any) -> str:
        try:
            payload = response.json()
            message = payload.get("error", payload)
            if isinstance(message, dict):
                message = message.get("message", message)
            text = str(message)
        except ValueError:
            text = response.text
        text = " ".join(text.split())[:200]
        return self.redact(text) or "no message"

    def redact(self, text: str) -> str:
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "***")
        return text

    def _content_of(self, response: Any) -> str:
        try:
            message = response.json()["choices"][0]["message"]
            content = message.get("content")
            if isinstance(content, list):
                # Some servers return content parts even for text-only answers.
                content = "".join(part.get("text", "") for part in content
                                  if isinstance(part, dict))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise PairFailure("malformed response (not a chat completion)") from exc
        if not isinstance(content, str):
            raise PairFailure("malformed response (no text content)")
        from finexl.limits import MAX_VLM_ANSWER_CHARS

        if len(content) > MAX_VLM_ANSWER_CHARS.value():
            raise PairFailure(f"answer of {len(content):,} characters, over the limit of"
                              f" {MAX_VLM_ANSWER_CHARS.value():,} ({MAX_VLM_ANSWER_CHARS.env})")
        return content
