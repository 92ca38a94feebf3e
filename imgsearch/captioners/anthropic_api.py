"""Captions from Anthropic's Messages API (Claude), with the image as a base64 content block."""

from __future__ import annotations

from typing import Any

from .api_base import ApiCaptioner, ApiProblem, ApiReply, MalformedReply, import_client, message_of, problem_for_status


class AnthropicCaptioner(ApiCaptioner):
    """Needs ANTHROPIC_API_KEY (or IMGSEARCH_API_KEY); the base URL is for proxies and gateways."""

    name = "anthropic"
    default_model = "claude-haiku-4-5"
    key_env = "ANTHROPIC_API_KEY"
    default_endpoint = "https://api.anthropic.com"

    def make_client(self) -> Any:
        anthropic = import_client("anthropic", "anthropic")
        return anthropic.Anthropic(
            api_key=self._api_key or None,
            base_url=self.base_url or None,
            timeout=self.request_timeout,
            max_retries=0,  # retries are ours, the same for every backend
        )

    def send(self, client: Any, image_b64: str, media_type: str, prompt: str) -> ApiReply:
        message = client.messages.create(
            model=self.model,
            max_tokens=self.max_new_tokens,
            messages=[
                {
                    "role": "user",
                    "content": [
                        # Anthropic recommends the image before the text that refers to it.
                        {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": image_b64}},
                        {"type": "text", "text": prompt},
                    ],
                }
            ],
        )
        blocks = getattr(message, "content", None)
        if not isinstance(blocks, list):
            raise MalformedReply("the reply has no content blocks")
        texts = [block.text for block in blocks if getattr(block, "type", "") == "text"]
        if not texts:
            raise MalformedReply("the reply has no text block")
        usage = getattr(message, "usage", None)
        return ApiReply(
            text=" ".join(texts),
            input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            truncated=message.stop_reason == "max_tokens",
        )

    def classify(self, exc: Exception) -> ApiProblem | None:
        anthropic = import_client("anthropic", "anthropic")
        if isinstance(exc, anthropic.APIStatusError):
            return problem_for_status(exc.status_code, message_of(exc), exc.response.headers)
        if isinstance(exc, anthropic.APITimeoutError):
            return ApiProblem("retry", f"no answer within {self.request_timeout:g}s")
        if isinstance(exc, anthropic.APIConnectionError):
            return ApiProblem("unreachable", f"connection failed ({exc.__cause__ or exc})")
        if isinstance(exc, anthropic.APIResponseValidationError):
            return ApiProblem("image", f"malformed response ({exc})")
        return None
