"""Checks on an OpenAI request body before it is forwarded (pure: bytes in, parsed dict or RouterError out)."""

from __future__ import annotations

from typing import Any

import orjson

from loraplane.serving.router.errors import bad_request


def parse(body: bytes, endpoint: str) -> dict[str, Any]:
    """The JSON object of a /v1/chat/completions or /v1/completions request; 400 naming the bad field."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8
        raise bad_request(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string.", "model")
    if endpoint == "chat":
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise bad_request("'messages' is required and must be a non-empty array of message objects.", "messages")
    else:
        prompt = data.get("prompt")
        if not isinstance(prompt, str | list) or not prompt:
            raise bad_request("'prompt' is required and must be a string or an array.", "prompt")
    if "stream" in data and not isinstance(data["stream"], bool):
        raise bad_request("'stream' must be a boolean.", "stream")
    if data.get("stream_options") is not None and not isinstance(data["stream_options"], dict):
        raise bad_request("'stream_options' must be an object.", "stream_options")
    for field in ("max_tokens", "max_completion_tokens", "n"):
        value = data.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise bad_request(f"'{field}' must be a positive integer.", field)
    return data
