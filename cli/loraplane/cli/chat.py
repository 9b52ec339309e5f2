"""`loraplane chat MODEL "question"`: one request through the OpenAI-compatible endpoint (the `openai` client)."""

from __future__ import annotations

from loraplane.cli.errors import ChatError

DEFAULT_URL = "http://127.0.0.1:8000/v1"


def ask(url: str, model: str, question: str, *, max_tokens: int = 128, api_key: str = "local") -> str:
    """The model's answer at temperature 0."""
    import openai

    client = openai.OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=120)
    try:
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            temperature=0,
            max_tokens=max_tokens,
        )
    except openai.APIConnectionError as exc:
        raise ChatError(f"no server at {url}: start one with `loraplane serve`") from exc
    except openai.APIStatusError as exc:
        raise ChatError(f"{url} answered {exc.status_code}: {exc.message}") from exc
    return (reply.choices[0].message.content or "").strip()
