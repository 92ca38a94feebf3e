"""Captions from any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, LM Studio, llama.cpp)."""

from __future__ import annotations

from typing import Any

from .api_base import ApiCaptioner, ApiProblem, ApiReply, MalformedReply, import_client, message_of, problem_for_status


class OpenAICaptioner(ApiCaptioner):
    """The image goes as a base64 data URL beside the prompt in one user message.

    Without a base URL this is api.openai.com and needs OPENAI_API_KEY (or IMGSEARCH_API_KEY);
    with one (http://localhost:8000/v1 for vLLM) a key is optional.
    """

    name = "openai"
    default_model = "gpt-4o-mini"
    key_env = "OPENAI_API_KEY"
    default_endpoint = "https://api.openai.com/v1"

    def make_client(self) -> Any:
        openai = import_client("openai", "openai")
        return openai.OpenAI(
            # Local servers ignore the key, but the client refuses to start without one.
            api_key=self._api_key or "unused",
            base_url=self.base_url or None,
            timeout=self.request_timeout,
            max_retries=0,  # retries are ours, the same for every backend
        )

    def send(self, client: Any, image_b64: str, media_type: str, prompt: str) -> ApiReply:
        # api.openai.com's newer models accept only max_completion_tokens; most
        # compatible servers know only max_tokens.
        limit = {"max_tokens": self.max_new_tokens} if self.base_url else {"max_completion_tokens": self.max_new_tokens}
        response = client.chat.completions.create(
            model=self.model,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{image_b64}"}},
                    ],
                }
            ],
            **limit,
        )
        if not getattr(response, "choices", None):
            raise MalformedReply("the reply has no choices")
        choice = response.choices[0]
        text = getattr(getattr(choice, "message", None), "content", None)
        if not isinstance(text, str):
            raise MalformedReply("the reply has no message text")
        usage = getattr(response, "usage", None)
        return ApiReply(
            text=text,
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            truncated=choice.finish_reason == "length",
        )

    def classify(self, exc: Exception) -> ApiProblem | None:
        openai = import_client("openai", "openai")
        if isinstance(exc, openai.APIStatusError):
            return problem_for_status(exc.status_code, message_of(exc), exc.response.headers)
        if isinstance(exc, openai.APITimeoutError):
            return ApiProblem("retry", f"no answer within {self.request_timeout:g}s")
        if isinstance(exc, openai.APIConnectionError):
            return ApiProblem("unreachable", f"connection failed ({exc.__cause__ or exc})")
        if isinstance(exc, openai.APIResponseValidationError):
            return ApiProblem("image", f"malformed response ({exc})")
        return None
