"""vLLM throughput with 1, 4 and 8 LoRA adapters in mixed traffic vs the base model alone, one server, one run.

One vLLM server (launched from our builder, `loraplane.serving.vllm_args`, CPU profile) serves the packaged
SmolLM2-135M-Instruct (or the tiny test Llama with --tiny). Random-weight rank-8 adapters on all attention
projections are loaded at runtime by our adapter manager. Each phase sends the same number of completion
requests (fixed output length: ignore_eos) at the same concurrency; phase "k" spreads them round-robin over
k adapters. Phases are interleaved over --rounds rounds so drift from other load on the machine hits all alike.
Throughput is generated tokens per second; ratio_k = throughput(k adapters) / throughput(base).

    python bench/multi_adapter.py [--requests 64] [--concurrency 32] [--max-num-seqs 32] [--max-tokens 32]
                                  [--rounds 2] [--tiny]

The defaults come from a batch-size sweep on the development machine, recorded in docs/benchmarks.md.

Last line: `multi_adapter ratio_1=<f> ratio_4=<f> ratio_8=<f>`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tests.support`: the tiny Llama for --tiny, adapters, the vLLM launch

from loraplane.api.modelserver import VllmSpec  # noqa: E402
from loraplane.serving import proctree  # noqa: E402
from loraplane.serving.adapter_manager import AdapterManager, DesiredAdapter, NoRouting  # noqa: E402
from loraplane.serving.vllm_args import CPU_MAX_NUM_SEQS  # noqa: E402
from loraplane.serving.vllm_client import VllmClient  # noqa: E402
from tests.support.serving import vllm_server, write_adapter  # noqa: E402

RANK = 8
PHASES = (0, 1, 4, 8)  # 0 = base model alone
PROMPT = "Patient reports fever and a high heart rate. Summarise the findings and suggest next steps:"


def base_model(work: Path, tiny: bool) -> Path:
    if tiny:
        from tests.support.tiny import build_tiny_base

        return build_tiny_base(work)
    from loraplane.api.common import ModelSource
    from loraplane.trainer.models import resolve_model

    cache = Path.home() / ".cache/loraplane/models"
    return resolve_model(
        ModelSource(uri="builtin://smollm2-135m-instruct"), cache_dir=cache, pvc_root=work, token=None
    ).path


def make_adapters(base: Path, root: Path, count: int) -> dict[str, Path]:
    """`count` random-weight LoRA adapters (seeded, non-zero B) with result.json."""
    names = [f"bench-{i}" for i in range(count)]
    return {
        name: write_adapter(base, root / name, name=name, seed=100 + i, rank=RANK, b_scale=1.0)
        for i, name in enumerate(names)
    }


async def phase(
    session: aiohttp.ClientSession, url: str, models: list[str], requests: int, concurrency: int, max_tokens: int
) -> tuple[int, float]:
    """Send `requests` completions round-robin over `models`; return (generated tokens, seconds)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(models[i % len(models)])
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while not queue.empty():
            model = queue.get_nowait()
            body = {
                "model": model,
                "prompt": PROMPT,
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            async with session.post(url + "/v1/completions", json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"{model}: {resp.status} {data}")
                tokens += int(data["usage"]["completion_tokens"])

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tokens, time.perf_counter() - start


async def measure(url: str, adapters: list[str], args: argparse.Namespace) -> dict[int, float]:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # warm-up: every adapter once (activation into a LoRA slot), then a short batch
        await phase(session, url, ["base", *adapters], len(adapters) + 1, 4, 4)
        await phase(session, url, ["base"], args.concurrency, args.concurrency, args.max_tokens)
        totals = {k: [0, 0.0] for k in PHASES}
        for round_ in range(args.rounds):
            for k in PHASES:
                models = ["base"] if k == 0 else adapters[:k]
                tokens, seconds = await phase(session, url, models, args.requests, args.concurrency, args.max_tokens)
                totals[k][0] += tokens
                totals[k][1] += seconds
                print(f"round {round_ + 1} adapters={k}: {tokens / seconds:.1f} tok/s ({seconds:.1f}s)", flush=True)
    return {k: tokens / seconds for k, (tokens, seconds) in totals.items()}


async def load_adapters(url: str, adapters: dict[str, Path]) -> None:
    async with aiohttp.ClientSession() as session:
        manager = AdapterManager(VllmClient(session, timeout=300), NoRouting())
        report = await manager.reconcile(url, {n: DesiredAdapter(n, str(p)) for n, p in adapters.items()})
    if report.errors or report.loaded != frozenset(adapters):
        raise RuntimeError(f"adapters not loaded: {dict(report.errors)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64, help="requests per phase and round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-num-seqs", type=int, default=CPU_MAX_NUM_SEQS)
    parser.add_argument("--tiny", action="store_true", help="the tiny random Llama instead of SmolLM2")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-multi-adapter-") as tmp:
        work = Path(tmp)
        base = base_model(work, args.tiny)
        adapters = make_adapters(base, work / "adapters", max(PHASES))
        spec = VllmSpec(
            max_loras=max(PHASES),  # every adapter of the mix resident at once: no slot swapping
            max_lora_rank=RANK,  # the LoRA kernels pad to maxLoraRank: match the adapters' rank
            max_cpu_loras=max(PHASES),
            max_model_len=512,
            dtype="float32",
            gpu_memory_utilization=0.2,
        )
        server = vllm_server(
            base, spec, work / "vllm.log", max_num_seqs=args.max_num_seqs, port=args.port, start_timeout=900
        )
        print("vLLM:", " ".join(server.launch.argv[3:]), flush=True)
        started = time.perf_counter()
        server.start()
        try:
            print(f"vLLM ready in {time.perf_counter() - started:.0f}s", flush=True)
            asyncio.run(load_adapters(server.url, adapters))
            throughput = asyncio.run(measure(server.url, sorted(adapters), args))
        finally:
            server.stop()
    base_tps = throughput[0]
    print(" ".join(f"adapters={k}:{v:.1f}tok/s" for k, v in throughput.items()))
    print(
        f"multi_adapter ratio_1={throughput[1] / base_tps:.3f} "
        f"ratio_4={throughput[4] / base_tps:.3f} ratio_8={throughput[8] / base_tps:.3f}"
    )


if __name__ == "__main__":
    sys.exit(proctree.entry_point(main))  # SIGTERM, SIGHUP: the finally blocks stop vLLM, remove files
