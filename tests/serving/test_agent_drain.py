"""What the agent's drain reads from vLLM's /metrics: the adapters with requests running or waiting, from the
`vllm:lora_requests_info` sample set last (pure; the live drain runs in test_agent.py)."""

from __future__ import annotations

from loraplane.serving.agent.drain import busy_adapters

HEAD = "# HELP vllm:lora_requests_info Running stats on lora requests.\n# TYPE vllm:lora_requests_info gauge\n"


def sample(running: str, waiting: str, at: float) -> str:
    labels = f'max_lora="4",running_lora_adapters="{running}",waiting_lora_adapters="{waiting}"'
    return f"vllm:lora_requests_info{{{labels}}} {at}\n"


def test_the_sample_set_last_is_the_current_state() -> None:
    # as vLLM left it after one request of "probe" ran and finished (seen on vLLM 0.32's CPU build)
    text = HEAD + sample("probe", "probe", 1796298626.774) + sample("", "", 1796298626.783)
    assert busy_adapters(text) == frozenset()
    text = HEAD + sample("", "", 1796298626.783) + sample("a,b", "c", 1796298627.5)
    assert busy_adapters(text) == {"a", "b", "c"}


def test_no_lora_sample_means_nothing_is_busy() -> None:
    assert busy_adapters(HEAD) == frozenset()  # no request since vLLM started
    assert busy_adapters('vllm:num_requests_running{engine="0",model_name="base"} 1.0\n') == frozenset()
    assert busy_adapters("") == frozenset()
