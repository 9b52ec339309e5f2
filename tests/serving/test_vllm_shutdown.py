"""vLLM as our builder launches it (`--shutdown-timeout`), stopped the way VllmProcess stops it: SIGTERM.

A real replica of the tiny base model. The answer in flight when the signal comes must finish, whole, and
the server must then exit by itself, well before VllmProcess would fall back to SIGKILL.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from loraplane.serving.vllm_process import VllmProcess
from tests.support.serving import BASE_NAME

TOKENS = 200  # long enough to be mid-answer when the signal arrives (the tiny model makes ~100 tokens/s here)
GRACE_S = 60.0  # VllmProcess.stop's wait before SIGKILL; the builder's drain budget is 10 s


def test_sigterm_lets_the_answer_in_flight_finish(replicas_up: list[VllmProcess]) -> None:
    replica = replicas_up[1]
    body = {
        "model": BASE_NAME,
        "messages": [{"role": "user", "content": "Tell me a long story"}],
        "max_tokens": TOKENS,
        "ignore_eos": True,  # vLLM's extension: exactly max_tokens, however the random model ends
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with ThreadPoolExecutor(1) as pool, httpx.stream("POST", replica.url + "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        events = (line for line in resp.iter_lines() if line)
        first = next(events)
        assert first.startswith("data: {"), first
        signalled = time.monotonic()
        stopping = pool.submit(replica.stop, GRACE_S)
        rest = list(events)
        finished = time.monotonic()
        code = stopping.result(timeout=GRACE_S + 60)
        exited = time.monotonic()
    assert rest and rest[-1] == "data: [DONE]", rest[-3:]
    usage = json.loads(rest[-2].removeprefix("data: "))["usage"]
    assert usage["completion_tokens"] == TOKENS, usage
    texts = [json.loads(e.removeprefix("data: "))["choices"] for e in [first, *rest[:-2]]]
    assert sum(1 for choices in texts if choices and choices[0]["delta"].get("content")) > TOKENS // 2
    assert finished - signalled > 0.1, "the answer was already complete when the signal came: nothing was tested"
    assert code is not None and code >= 0, f"vLLM did not exit by itself after SIGTERM (exit code {code})"
    assert exited - signalled < GRACE_S
