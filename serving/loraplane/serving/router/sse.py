"""OpenAI streams (server-sent events) as the router relays them: cut into whole events, the usage read.

The router asks vLLM for the usage event of every stream (`stream_options.include_usage`) so its token
metrics count streamed answers too; when the client did not ask for it, that event is taken out again.
Pure functions: bytes in, events and usage out.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

EVENT_END = re.compile(rb"\r?\n\r?\n")  # an event ends at a blank line


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete events at the start of `buffer` (each with its blank line) and the incomplete rest."""
    events: list[bytes] = []
    start = 0
    for match in EVENT_END.finditer(buffer):
        events.append(buffer[start : match.end()])
        start = match.end()
    return events, buffer[start:]


def final_usage(event: bytes) -> dict[str, Any] | None:
    """The usage of a stream's usage event (`"choices": []` and a usage object), else None.

    With `stream_options.continuous_usage_stats` every chunk carries the running usage too; only the final
    event, which has no choices, is the total.
    """
    if b'"usage":{' not in event:
        return None
    for line in event.splitlines():
        if line.startswith(b"data:"):
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return None
            if isinstance(data, dict) and data.get("choices") == [] and isinstance(data.get("usage"), dict):
                usage: dict[str, Any] = data["usage"]
                return usage
    return None


def wants_usage(body: dict[str, Any]) -> bool:
    """The client asked for the usage event itself."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
