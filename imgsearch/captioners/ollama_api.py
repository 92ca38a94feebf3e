"""Captions from a model served by Ollama (/api/chat with the image in the message's images)."""

from __future__ import annotations

import threading
from typing import Any

from .api_base import ApiCaptioner, ApiProblem, ApiReply, MalformedReply, import_client, problem_for_status


class OllamaCaptioner(ApiCaptioner):
    """Host from the base URL setting, else OLLAMA_HOST, else http://localhost:11434; no key needed."""

    name = "ollama"
    default_model = "llava"
    key_env = "OLLAMA_API_KEY"
    needs_key = False
    default_endpoint = "http://localhost:11434"
    # The ollama client's errors carry no headers; the last response's Retry-After is kept
    # per thread. One record serves every instance: a worker thread makes one request at a
    # time, whichever captioner it works for, and send clears the record before each.
    _last_headers = threading.local()

    @property
    def endpoint(self) -> str:
        import os

        return self.base_url or os.environ.get("OLLAMA_HOST") or self.default_endpoint

    def make_client(self) -> Any:
        ollama = import_client("ollama", "ollama")
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else None
        return ollama.Client(
            host=self.base_url or None,
            timeout=self.request_timeout,
            headers=headers,
            event_hooks={"response": [self._remember_headers]},
        )

    def _remember_headers(self, response: Any) -> None:
        self._last_headers.value = dict(response.headers)

    def send(self, client: Any, image_b64: str, media_type: str, prompt: str) -> ApiReply:
        self._last_headers.value = {}
        response = client.chat(
            model=self.model,
            messages=[{"role": "user", "content": prompt, "images": [image_b64]}],
            options={"num_predict": self.max_new_tokens},
            stream=False,
        )
        message = getattr(response, "message", None)
        text = getattr(message, "content", None)
        if not isinstance(text, str):
            raise MalformedReply("the reply has no message text")
        return ApiReply(
            text=text,
            input_tokens=int(getattr(response, "prompt_eval_count", 0) or 0),
            output_tokens=int(getattr(response, "eval_count", 0) or 0),
            truncated=getattr(response, "done_reason", "") == "length",
        )

    def classify(self, exc: Exception) -> ApiProblem | None:
        import httpx

        ollama = import_client("ollama", "ollama")
        if isinstance(exc, ollama.ResponseError):
            problem = problem_for_status(exc.status_code, str(exc.error), getattr(self._last_headers, "value", {}))
            if exc.status_code == 404:
                return ApiProblem("fatal", f"{problem.reason} (pull it first: ollama pull {self.model})")
            return problem
        if isinstance(exc, httpx.TimeoutException):
            return ApiProblem("retry", f"no answer within {self.request_timeout:g}s")
        if isinstance(exc, (httpx.TransportError, ConnectionError)):
            return ApiProblem("unreachable", f"connection failed ({exc})")
        return None
