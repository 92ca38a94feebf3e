"""What every hosted-API captioner shares: prompts, image encoding, concurrency, retries, usage.

A backend module (openai_api, anthropic_api, ollama_api) only builds its client, sends one
request, and says what an exception from its client means. Everything else lives here, so
the backends behave alike: the same presets, the same retry policy, the same error rules.
"""

from __future__ import annotations

import base64
import email.utils
import io
import random
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..config import DEFAULT_CAPTION_MODEL
from ..errors import ApiAuthError, CaptionerError, ConfigError, ImageLoadError, MissingDependencyError, install_hint
from .base import Captioner, CaptionFailure, CaptionInput
from .prompts import max_new_tokens_of, preset_max_new_tokens, resolve_prompt

if TYPE_CHECKING:
    from PIL import Image

    from ..config import Settings

# Under every provider's per-image limit (Anthropic: 5 MB of base64) with room to spare.
MAX_IMAGE_BYTES = 3_500_000
# A server asking for a longer pause than this is treated as asking for this long.
MAX_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class ApiReply:
    """The useful part of one successful response."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    truncated: bool = False  # the model stopped at the token limit


@dataclass(frozen=True)
class ApiProblem:
    """What a failed request means for the run.

    auth: the key was refused, stop the run; fatal: nothing can succeed (unknown model),
    stop the run; retry: try this image again later; unreachable: retry, and stop the
    run if it never answers; image: this image failed, go on with the others.
    """

    kind: Literal["auth", "fatal", "retry", "unreachable", "image"]
    reason: str
    retry_after: float | None = None


class MalformedReply(ValueError):
    """The server answered 200 with something that is not a usable reply."""


def problem_for_status(status: int, message: str, headers: Mapping[str, str] | None = None) -> ApiProblem:
    """The meaning of an HTTP error status, shared by every backend."""
    detail = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if status in (401, 403):
        return ApiProblem("auth", detail)
    if status in (402, 404):  # out of credit, or no such model/endpoint: every image would fail
        return ApiProblem("fatal", detail)
    if status in (408, 409, 425, 429) or status >= 500:
        return ApiProblem("retry", detail, parse_retry_after(headers or {}))
    return ApiProblem("image", detail)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from Retry-After (seconds or an HTTP date) or retry-after-ms."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
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
    return max(0.0, when.timestamp() - time.time())


def retry_delay(attempt: int, retry_after: float | None, base: float, cap: float) -> float:
    """Exponential backoff with jitter, or the server's Retry-After plus a little jitter."""
    if retry_after is not None:
        wanted = min(retry_after, MAX_RETRY_AFTER)
        # Never earlier than asked; the jitter spreads concurrent workers apart.
        return wanted + random.uniform(0, min(1.0, 0.1 * wanted + base))
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def encode_jpeg(image: Image.Image, max_side: int, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The picture downscaled to max_side on its long side and re-encoded as JPEG under max_bytes."""
    from PIL import Image as PILImage

    side = max(16, max_side)
    quality = 85
    while True:
        scaled = image.convert("RGB") if image.mode != "RGB" else image.copy()
        if max(scaled.size) > side:
            scaled.thumbnail((side, side), PILImage.Resampling.LANCZOS)
        buffer = io.BytesIO()
        scaled.save(buffer, format="JPEG", quality=quality, optimize=True)
        data = buffer.getvalue()
        if len(data) <= max_bytes or side <= 64:
            return data
        side = int(side * 0.75)
        quality = max(60, quality - 10)


def import_client(module: str, extra: str) -> Any:
    """Import a vendor's client library, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"the {extra} captioner needs the {module} package: {install_hint(extra)}"
        ) from None


_Api = TypeVar("_Api", bound="ApiCaptioner")


class ApiCaptioner(Captioner):
    """Base for captioners that call a hosted or local model over HTTP, N requests at a time."""

    name = ""  # the registered name, also the start of the id
    default_model = ""
    key_env = ""  # the vendor's own environment variable for the key, read as a fallback
    needs_key = True
    # Backoff: about base, 2*base, 4*base... seconds between attempts, capped.
    backoff_base = 1.0
    backoff_cap = 60.0

    def __init__(
        self,
        model: str = "",
        prompt: str = "",
        preset: str = "",
        max_new_tokens: int | None = None,
        batch_size: int = 8,
        concurrency: int = 4,
        image_max_side: int = 1024,
        request_timeout: float = 60.0,
        max_attempts: int = 5,
        api_key: str = "",
        api_base_url: str = "",
    ):
        # The transformers default means "not chosen" for an API backend.
        self.model = model if model and model != DEFAULT_CAPTION_MODEL else self.default_model
        self._prompt = resolve_prompt(preset, prompt)
        # None: the preset's budget (a detailed description needs more room than a caption).
        self.max_new_tokens = max_new_tokens if max_new_tokens is not None else preset_max_new_tokens(preset, prompt)
        self.concurrency = max(1, concurrency)
        # A chunk of the indexer should keep every worker busy.
        self.batch_size = max(batch_size, self.concurrency)
        self.image_max_side = image_max_side
        self.image_side = image_max_side  # pictures are sent at most this large
        self.request_timeout = request_timeout
        self.max_attempts = max(1, max_attempts)
        self.base_url = api_base_url.rstrip("/")
        self._api_key = self._find_key(api_key)
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls: type[_Api], settings: Settings) -> _Api:
        """Built from the caption and API settings, the same for every API backend."""
        batch = {"batch_size": settings.batch_size} if settings.batch_size else {}  # 0: this class's default
        return cls(
            model=settings.caption_model,
            prompt=settings.caption_prompt,
            preset=settings.caption_preset,
            max_new_tokens=max_new_tokens_of(settings),
            concurrency=settings.concurrency,
            image_max_side=settings.image_max_side,
            request_timeout=settings.request_timeout,
            max_attempts=settings.max_attempts,
            api_key=settings.api_key,
            api_base_url=settings.api_base_url,
            **batch,
        )

    # -- identity -----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return f"{self.name}:{self.model}"

    @property
    def prompt(self) -> str:
        return self._prompt

    @property
    def endpoint(self) -> str:
        """Where requests go, for messages (never includes the key)."""
        return self.base_url or self.default_endpoint

    default_endpoint = ""

    def _find_key(self, given: str) -> str:
        import os

        key = given or (os.environ.get(self.key_env, "") if self.key_env else "")
        if not key and self.needs_key and not self.base_url:
            raise ConfigError(f"the {self.name} captioner needs an API key: set {self.key_env} or IMGSEARCH_API_KEY")
        return key

    @property
    def api_key(self) -> str:
        """The key requests are sent with (never shown: error text goes through redact)."""
        return self._api_key

    def redact(self, text: str) -> str:
        """text with the API key blanked out, whatever a server echoed back."""
        if self._api_key and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return " ".join(text.split())[:300]

    # -- what a backend provides ----------------------------------------------------------------

    @abstractmethod
    def make_client(self) -> Any:
        """The vendor client, configured with the key, base URL and timeout, retries off."""

    @abstractmethod
    def send(self, client: Any, image_b64: str, media_type: str, prompt: str) -> ApiReply:
        """One request for one image; raises the client's exceptions or MalformedReply."""

    @abstractmethod
    def classify(self, exc: Exception) -> ApiProblem | None:
        """What a client exception means, or None when it is not the client's."""

    # -- the shared machinery ---------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.make_client()
        return self._client

    def caption_batch(self, items: list[CaptionInput]) -> list[str | CaptionFailure]:
        return self.caption_batch_keeping(items, lambda finished: None)

    def caption_batch_keeping(
        self, items: list[CaptionInput], keep_partial: Callable[[dict[int, str]], None]
    ) -> list[str | CaptionFailure]:
        client = self.client
        results: list[str | CaptionFailure | None] = [None] * len(items)
        payloads: dict[int, str] = {}
        for index, item in enumerate(items):
            try:
                payloads[index] = self._encoded(item)
            except ImageLoadError as exc:
                results[index] = CaptionFailure(str(exc))
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(payloads))))
        futures: dict[Future[str | CaptionFailure], int] = {
            pool.submit(self._caption_one, client, payloads[i], str(items[i].path), stop): i for i in payloads
        }
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()  # re-raises a stopping error (bad key, unknown model)
        except BaseException as exc:
            # Stop the others; after a stopping error, requests already in flight finish
            # (bounded by the timeout) and their captions, already paid for, are kept before
            # the stop goes on. A second Ctrl-C means now: keep only what is done.
            stop.set()
            pool.shutdown(wait=not isinstance(exc, KeyboardInterrupt), cancel_futures=True)
            finished = {
                futures[f]: caption
                for f in futures
                if f.done() and not f.cancelled() and f.exception() is None and isinstance(caption := f.result(), str)
            }
            keep_partial(finished)
            raise
        pool.shutdown(wait=True)
        for future, index in futures.items():
            results[index] = future.result()
        return [r if r is not None else CaptionFailure("not captioned") for r in results]

    def _encoded(self, item: CaptionInput) -> str:
        from ..pictures.images import load_rgb

        image = item.image if item.image is not None else load_rgb(item.path)
        return base64.b64encode(encode_jpeg(image, self.image_max_side)).decode("ascii")

    def _caption_one(self, client: Any, image_b64: str, path: str, stop: threading.Event) -> str | CaptionFailure:
        attempt = 0
        while True:
            attempt += 1
            if stop.is_set():  # another request hit a stopping error: send nothing more
                return CaptionFailure(f"{self.name}: stopped before this image was sent")
            try:
                reply = self.send(client, image_b64, "image/jpeg", self._prompt)
            except Exception as exc:
                self._tally_request(retried=False)
                problem = self._problem(exc)
                if problem.kind in ("auth", "fatal") or (
                    problem.kind == "unreachable" and attempt >= self.max_attempts
                ):
                    stop.set()
                if problem.kind == "auth":
                    raise ApiAuthError(
                        f"{self.name} at {self.endpoint} refused the API key ({self.redact(problem.reason)}); "
                        f"check {self.key_env or 'IMGSEARCH_API_KEY'}"
                        + (" or IMGSEARCH_API_KEY" if self.key_env else "")
                    ) from None
                if problem.kind == "fatal":
                    raise CaptionerError(
                        f"{self.name} at {self.endpoint} cannot caption with model {self.model!r}: "
                        f"{self.redact(problem.reason)}"
                    ) from None
                if problem.kind == "image":
                    return CaptionFailure(f"{self.name}: {self.redact(problem.reason)}")
                if attempt >= self.max_attempts:
                    if problem.kind == "unreachable":
                        raise CaptionerError(
                            f"cannot reach {self.name} at {self.endpoint} after {attempt} attempts: "
                            f"{self.redact(problem.reason)}"
                        ) from None
                    return CaptionFailure(
                        f"{self.name}: {self.redact(problem.reason)} (gave up after {attempt} attempts)"
                    )
                self._tally_request(retried=True, counted=False)
                delay = retry_delay(attempt, problem.retry_after, self.backoff_base, self.backoff_cap)
                if stop.wait(delay):
                    return CaptionFailure(f"{self.name}: stopped before an answer came")
                continue
            self._tally_reply(reply, path)
            return reply.text

    def _problem(self, exc: Exception) -> ApiProblem:
        problem = self.classify(exc)
        if problem is not None:
            return problem
        if isinstance(exc, (MalformedReply, ValueError, KeyError, TypeError, AttributeError, IndexError)):
            # JSON that does not parse, or JSON without the fields a reply must have.
            return ApiProblem("image", f"malformed response ({type(exc).__name__}: {exc})")
        return ApiProblem("image", f"{type(exc).__name__}: {exc}")

    def _tally_request(self, retried: bool, counted: bool = True) -> None:
        with self._lock:
            usage = self._usage_tally()
            if counted:
                usage.requests += 1
            if retried:
                usage.retries += 1

    def _tally_reply(self, reply: ApiReply, path: str) -> None:
        with self._lock:
            usage = self._usage_tally()
            usage.requests += 1
            usage.input_tokens += reply.input_tokens
            usage.output_tokens += reply.output_tokens
            if reply.truncated:
                usage.truncated.append(path)


def message_of(exc: Exception) -> str:
    """The human part of a client exception's message."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return str(getattr(exc, "message", None) or exc)
