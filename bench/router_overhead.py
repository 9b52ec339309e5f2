"""What our router adds over talking to vLLM directly, side by side with LiteLLM's proxy, one run.

One vLLM CPU server (launched from our builder, `loraplane.serving.vllm_args`) serves the tiny random Llama
of the tests (2 layers) as "base" plus one random rank-8 LoRA adapter, so the model costs little and the
extra hop shows. The same vLLM is reached three ways:

    direct   vLLM itself; the adapter by its vLLM name (bench-v1)
    router   `python -m loraplane.serving.router` as its own process (uvicorn + uvloop + httptools, JSON
             logs, LORAPLANE_ROUTER_ACCESS_LOG=false unless --router-access-log) with a routes file: public
             model "bench" -> version "bench-v1" on that replica (the router loads the adapter into vLLM
             itself, as in production)
    litellm  LiteLLM's proxy (`litellm --config`, one worker, no master key, offline cost map): model
             "bench" -> hosted_vllm/bench-v1 on the same vLLM

Every request is the same chat completion (short prompt, max_tokens=1, temperature 0) for the adapter
(--model base: the base model). The load generator is one asyncio aiohttp client (keep-alive, one
connection pool per target); at each concurrency c, c workers share N requests per target. Latency is per
request, from sending to the last byte of the answer; req/s is successful requests over wall time. At each
concurrency every target gets a warm-up, then the targets take turns, the order changing each round
(`round_order`: direct and router always back to back, the two in turn first, LiteLLM before or after them), so
drift from other load on the machine hits all alike: at concurrency 1 request by request, above it in
blocks of at least 8c requests, so the ramp-up and the tail of a block (fewer than c in flight) weigh
little (each block after an unrecorded burst that re-opens its connections). The load generator and the
proxies run on every CPU but the last (their CPU affinity); vLLM's processes may use all of them. (vLLM's
threads can't be bound here: its OpenMP binding is for a worker process the CPU profile doesn't start, see
vllm_args.Profile. Bound by hand to a CPU of its own, the engine process ran much slower: its busy threads
then share one core; docs/benchmarks.md.)
Each table also gives CPU milliseconds per request of vLLM's API server, of vLLM's engine process (the API
server's child), of the proxy process (router, LiteLLM), of the load generator, and of the whole machine (all
processes, all CPUs, from /proc), and how busy the machine was: less moved by other load than latency, and
where the machine is saturated, throughput follows the machine's CPU per request.

    python bench/router_overhead.py [--concurrency 1 32 128] [--requests 10240] [--requests-c1 1600]
                                    [--rounds 10] [--model adapter|base] [--no-litellm]
                                    [--litellm CMD] [--router-access-log]

added = router (or LiteLLM) latency minus direct latency at the same percentile, at concurrency 1;
throughput_ratio = router req/s / direct req/s at the highest concurrency, the median over its rounds (in a
round the two targets run back to back, so one burst of other load on the machine moves one round, not the
result; the pooled ratio over all blocks is printed next to it). Targets (reported, not
enforced): p50 added <= 1 ms, p99 added <= 5 ms, throughput_ratio >= 0.95, router overhead below LiteLLM's.
LiteLLM's proxy runs from its own venv in the cache, installed on first use by hack/setup-litellm.sh; when it
cannot start, the bench prints why and reports nan for it.

Last line: `router_overhead p50_added_ms=<f> p99_added_ms=<f> throughput_ratio=<f> litellm_p50_added_ms=<f>`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tests.support`: the tiny Llama, adapters, the vLLM launch, bench plumbing

from loraplane.api.modelserver import VllmSpec  # noqa: E402
from loraplane.api.result import TrainingResult  # noqa: E402
from loraplane.serving import proctree  # noqa: E402
from loraplane.serving.router import AdapterVersion, PublicModel, ServerRoute  # noqa: E402
from tests.support.bench import JSON_HEADERS, Service, http_ok, percentile, wait_until  # noqa: E402
from tests.support.kube import free_port  # noqa: E402
from tests.support.serving import vllm_server  # noqa: E402

BASE = "base"  # vLLM --served-model-name, routable under the same name everywhere
PUBLIC = "bench"  # the adapter's public name (router, LiteLLM)
VERSION = "bench-v1"  # the adapter's name on vLLM (direct)
RANK = 8
MESSAGES = [{"role": "user", "content": "Patient reports fever. Next step?"}]
BLOCK = 8  # above concurrency 1, a recorded block has at least BLOCK * concurrency requests
START_TIMEOUT = 900.0  # vLLM on a busy CPU: imports, weights, warm-up
READY_TIMEOUT = 300.0  # router and LiteLLM, counted from vLLM being healthy


def chat_body(model: str) -> dict[str, object]:
    return {"model": model, "messages": MESSAGES, "max_tokens": 1, "temperature": 0}


def answers(target: Target) -> bool:
    return http_ok(target.url + "/v1/chat/completions", chat_body(target.model))


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # base URL; requests go to url + /v1/chat/completions
    model: str  # what this target calls the model under test
    proxy_pid: int | None = None  # the router's or LiteLLM's process (CPU accounting)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process `pid` (all its threads) from /proc; nan where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


def machine_cpu() -> dict[str, tuple[float, float]]:
    """Busy and total CPU seconds so far (/proc/stat): "cpu" is the whole machine, "cpuN" one CPU; {} if unknown."""
    hz = os.sysconf("SC_CLK_TCK")
    out: dict[str, tuple[float, float]] = {}
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if not line.startswith("cpu"):
                break
            name, *values = line.split()
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            out[name] = ((sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz)
    except (OSError, ValueError):
        return {}
    return out


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    seconds: float = 0.0  # wall time of the recorded blocks
    block_rps: list[float] = field(default_factory=list)  # req/s of each recorded block, round by round
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per request: api, engine, proxy, client, machine
    busy: float = math.nan  # share of the machine's CPU time that was busy during the recorded blocks
    errors: int = 0
    last_error: str = ""

    def percentile_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    @property
    def rps(self) -> float:
        return share(len(self.latencies), self.seconds)

    def cpu_ms(self, who: str) -> float:
        return self.cpu.get(who, math.nan) * 1000


def share(part: float, whole: float) -> float:
    """part / whole; nan when there is no whole (nothing measured)."""
    return part / whole if whole > 0 else math.nan


def cell(value: float, spec: str, width: int) -> str:
    """A table cell: `value` formatted by `spec`, or "-" when it is unknown (nan)."""
    return f"{'-' if math.isnan(value) else format(value, spec):>{width}}"


async def block(
    session: aiohttp.ClientSession, target: Target, requests: int, concurrency: int, stats: Stats | None
) -> None:
    """`requests` chat completions to `target` from `concurrency` workers; recorded into `stats` unless None."""
    url = target.url + "/v1/chat/completions"
    payload = json.dumps(chat_body(target.model)).encode()
    remaining = requests
    latencies: list[float] = []
    errors: list[str] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            try:
                async with session.post(url, data=payload, headers=JSON_HEADERS) as resp:
                    answer = await resp.read()
                    error = None if resp.status == 200 else f"HTTP {resp.status}: {answer[:300]!r}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - start
            if error is None:
                latencies.append(elapsed)
            else:
                errors.append(error)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    wall = time.perf_counter() - started
    if stats is not None:
        stats.latencies += latencies
        stats.seconds += wall
        stats.block_rps.append(share(len(latencies), wall))
        stats.errors += len(errors)
        if errors:
            stats.last_error = errors[-1]


def children(pid: int | None) -> list[int]:
    """The child processes of `pid` (Linux /proc); [] where unknown."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def snapshot(vllm_pid: int | None) -> list[float]:
    """CPU seconds so far: vLLM's API server, its engine process(es), this client; busy and total of the machine."""
    machine = machine_cpu().get("cpu", (math.nan, math.nan))
    engine = [cpu_seconds(child) for child in children(vllm_pid)]
    return [cpu_seconds(vllm_pid), math.fsum(engine) if engine else math.nan, time.process_time(), *machine]


async def level(
    sessions: dict[str, aiohttp.ClientSession],
    targets: list[Target],
    vllm_pid: int | None,
    concurrency: int,
    requests: int,
    rounds: int,
) -> dict[str, Stats]:
    """One concurrency: warm-up, then `rounds` rounds of one block per target, in `round_order`.

    CPU per request: vLLM's and the client's over the recorded blocks; a proxy's over the whole phase after
    the warm-up (it serves only its own target, and at concurrency 1 finishes a request after the answer
    went out, i.e. in another target's turn), divided by every request it got in that time.
    """
    for target in targets:
        await block(sessions[target.name], target, max(2 * concurrency, 20), concurrency, None)
    stats = {t.name: Stats() for t in targets}
    shared = {t.name: [0.0] * 5 for t in targets}  # the differences of snapshot() over the recorded blocks
    proxy_start = {t.name: cpu_seconds(t.proxy_pid) for t in targets if t.proxy_pid is not None}
    sent = dict.fromkeys(shared, 0)
    per_block = [requests // rounds + (1 if i < requests % rounds else 0) for i in range(rounds)]
    for round_, n in enumerate(per_block):
        for target in round_order(targets, round_):
            session = sessions[target.name]
            if concurrency > 1:  # (re)open the connections the server side closed while the others ran
                await block(session, target, concurrency, concurrency, None)
                sent[target.name] += concurrency
            before = snapshot(vllm_pid)
            await block(session, target, n, concurrency, stats[target.name])
            after = snapshot(vllm_pid)
            for i, (b, a) in enumerate(zip(before, after, strict=True)):
                shared[target.name][i] += a - b
            sent[target.name] += n
    for target in targets:
        s, recorded = stats[target.name], requests
        api_s, engine_s, client_s, busy_s, all_s = shared[target.name]
        s.cpu = {"api": api_s / recorded, "engine": engine_s / recorded, "client": client_s / recorded}
        s.cpu["machine"] = busy_s / recorded
        s.busy = share(busy_s, all_s)
        if target.name in proxy_start:
            s.cpu["proxy"] = (cpu_seconds(target.proxy_pid) - proxy_start[target.name]) / sent[target.name]
    return stats


def round_order(targets: list[Target], round_: int) -> list[Target]:
    """Round `round_`'s order: the first two (direct, router) back to back, first in turn; the rest before or after.

    Round by round for [direct, router, litellm]: d r l, r d l, l d r, l r d, then again.
    """
    pair, rest = targets[:2], targets[2:]
    if round_ % 2:
        pair.reverse()
    return pair + rest if round_ // 2 % 2 == 0 else rest + pair


def throughput_ratio(stats: dict[str, Stats], name: str) -> tuple[float, float, list[float]]:
    """`name`'s req/s over direct's: the median of the rounds' ratios, the pooled ratio of all blocks, each round's."""
    direct, other = stats["direct"], stats[name]
    paired = [o / d for o, d in zip(other.block_rps, direct.block_rps, strict=True)]
    return (statistics.median(paired) if paired else math.nan), other.rps / direct.rps, paired


def table(concurrency: int, requests: int, rounds: int, stats: dict[str, Stats]) -> str:
    direct = stats["direct"]
    lines = [
        f"concurrency {concurrency} ({requests} requests per target in {rounds} rounds)",
        f"  {'target':<8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6} {'+p50 ms':>8} {'+p99 ms':>8}"
        f"  cpu ms/req: {'api':>5} {'engine':>6} {'proxy':>5} {'client':>6} {'machine':>7}  busy",
    ]
    for name, s in stats.items():
        p50, p99 = s.percentile_ms(50), s.percentile_ms(99)
        added = (
            f"{'-':>8} {'-':>8}"
            if name == "direct"
            else f"{p50 - direct.percentile_ms(50):>8.2f} {p99 - direct.percentile_ms(99):>8.2f}"
        )
        cpu = " ".join(
            cell(ms, ".2f", width)
            for ms, width in (
                (s.cpu_ms("api"), 5),
                (s.cpu_ms("engine"), 6),
                (s.cpu_ms("proxy"), 5),
                (s.cpu_ms("client"), 6),
                (s.cpu_ms("machine"), 7),
            )
        )
        cpu += "  " + cell(s.busy, ".0%", 4)
        lines.append(f"  {name:<8} {p50:>8.2f} {p99:>8.2f} {s.rps:>8.1f} {s.errors:>6} {added}{' ' * 14}{cpu}")
    for name, s in stats.items():
        if s.errors:
            lines.append(f"  {name} last error: {s.last_error}")
    return "\n".join(lines)


async def measure(targets: list[Target], vllm_pid: int | None, args: argparse.Namespace) -> dict[int, dict[str, Stats]]:
    timeout = aiohttp.ClientTimeout(total=600)
    sessions = {
        t.name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=120), timeout=timeout)
        for t in targets
    }
    results: dict[int, dict[str, Stats]] = {}
    try:
        for concurrency in args.concurrency:
            requests = args.requests_c1 if concurrency == 1 else args.requests
            # concurrency 1: the targets alternate request by request; above: blocks of >= BLOCK * c requests
            rounds = requests if concurrency == 1 else max(1, min(args.rounds, requests // (BLOCK * concurrency)))
            results[concurrency] = await level(sessions, targets, vllm_pid, concurrency, requests, rounds)
            print(table(concurrency, requests, rounds, results[concurrency]), flush=True)
    finally:
        for session in sessions.values():
            await session.close()
    return results


def router_service(args: argparse.Namespace, work: Path, vllm_url: str, adapter: Path) -> Service:
    result = TrainingResult.read(adapter)
    assert result is not None and result.adapter is not None, f"{adapter} has no result.json"
    sha = result.adapter.sha256
    route = ServerRoute(
        base_model=BASE,
        replicas=[vllm_url],
        adapters=[PublicModel(name=PUBLIC, versions=[AdapterVersion(name=VERSION, path=str(adapter), sha256=sha)])],
    )
    routes = work / "routes.json"
    routes.write_text(json.dumps({"tiny": route.model_dump()}))
    port = free_port()
    env = {
        "LORAPLANE_ROUTER_HOST": "127.0.0.1",
        "LORAPLANE_ROUTER_PORT": str(port),
        "LORAPLANE_ROUTER_ROUTES_FILE": str(routes),
        "LORAPLANE_ROUTER_LOG_FORMAT": "json",
        "LORAPLANE_ROUTER_ACCESS_LOG": "true" if args.router_access_log else "false",
    }
    argv = [sys.executable, "-m", "loraplane.serving.router"]
    return Service("router", argv, env, f"http://127.0.0.1:{port}", work / "router.log", work)


def litellm_command() -> str | None:
    """LiteLLM's proxy from its own venv in the cache (hack/setup-litellm.sh installs it once)."""
    setup = Path(__file__).resolve().parent.parent / "hack" / "setup-litellm.sh"
    done = subprocess.run([str(setup)], stdout=subprocess.PIPE, text=True, check=False)  # its log goes to stderr
    if done.returncode != 0 or not done.stdout.strip():
        print(f"LiteLLM: {setup.name} failed (exit {done.returncode}); LiteLLM is left out", flush=True)
        return None
    return done.stdout.strip().splitlines()[-1]


def litellm_service(args: argparse.Namespace, work: Path, vllm_url: str) -> Service | None:
    command = args.litellm or litellm_command()
    if command is None:
        return None
    params = {"api_base": vllm_url + "/v1", "api_key": "none"}
    config = {
        "model_list": [
            {"model_name": BASE, "litellm_params": {"model": f"hosted_vllm/{BASE}", **params}},
            {"model_name": PUBLIC, "litellm_params": {"model": f"hosted_vllm/{VERSION}", **params}},
        ],
        # local mode, like our router without API keys: no master key, no database
        "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
    }
    path = work / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [command, "--config", str(path), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}  # offline; no per-request logs
    return Service("litellm", argv, env, f"http://127.0.0.1:{port}", work / "litellm.log", work)


def keep_off_last_cpu() -> None:
    """Run this process, and the processes it starts from now on, on every CPU but the last (if there are two).

    It leaves one CPU to vLLM alone. Measured on 2 cores, 2026-11-29, three runs each at concurrency 128:
    throughput ratio 0.946 / 0.979 / 0.962 with this, 0.948 / 0.876 / 0.951 without.
    """
    if not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, cpus[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--requests", type=int, default=10240, help="requests per target at concurrency > 1")
    parser.add_argument(
        "--requests-c1", type=int, default=1600, help="requests per target at concurrency 1 (the p50/p99 it compares)"
    )
    parser.add_argument("--rounds", type=int, default=10, help="blocks per target above concurrency 1 (>= 8c each)")
    parser.add_argument("--model", choices=["adapter", "base"], default="adapter", help="what every request asks")
    parser.add_argument("--max-num-seqs", type=int, default=128)
    parser.add_argument("--no-litellm", action="store_true", help="direct and router only")
    parser.add_argument("--litellm", help="LiteLLM's `litellm` command (default: hack/setup-litellm.sh's)")
    parser.add_argument("--router-access-log", action="store_true", help="keep the router's per-request log")
    args = parser.parse_args()

    from tests.support.serving import write_adapter
    from tests.support.tiny import build_tiny_base

    with tempfile.TemporaryDirectory(prefix="bench-router-overhead-") as tmp:
        work = Path(tmp)
        base = build_tiny_base(work)
        adapter = write_adapter(base, work / "adapters" / VERSION, name=PUBLIC, seed=1, rank=RANK)
        spec = VllmSpec(
            max_loras=1,
            max_lora_rank=RANK,
            max_cpu_loras=2,
            max_model_len=256,
            dtype="float32",
            gpu_memory_utilization=0.05,
        )
        vllm = vllm_server(base, spec, work / "vllm.log", max_num_seqs=args.max_num_seqs, start_timeout=START_TIMEOUT)
        print("vLLM:", " ".join(vllm.launch.argv[3:]), flush=True)
        router = router_service(args, work, vllm.url, adapter)
        litellm = None if args.no_litellm else litellm_service(args, work, vllm.url)
        services = [s for s in (router, litellm) if s is not None]
        try:
            started = time.perf_counter()
            vllm.spawn()
            keep_off_last_cpu()  # this process (the client) and, inherited, the proxies
            for service in services:  # they start while vLLM loads
                service.start()
            vllm.wait_ready()
            print(f"vLLM ready in {time.perf_counter() - started:.0f}s", flush=True)
            direct_model, router_model = (VERSION, PUBLIC) if args.model == "adapter" else (BASE, BASE)
            targets = [
                Target("direct", vllm.url, direct_model),
                Target("router", router.url, router_model, router.pid),
            ]
            wait_until("router /readyz", lambda: http_ok(targets[1].url + "/readyz"), READY_TIMEOUT, router)
            for target in targets:  # the router loads the adapter into vLLM: then both answer
                wait_until(f"{target.name} answering", functools.partial(answers, target), READY_TIMEOUT)
            if litellm is not None:
                ll = Target("litellm", litellm.url, router_model, litellm.pid)
                try:
                    wait_until(
                        "LiteLLM /health/liveliness",
                        lambda: http_ok(ll.url + "/health/liveliness"),
                        READY_TIMEOUT,
                        litellm,
                    )
                    wait_until("LiteLLM answering", functools.partial(answers, ll), 60, litellm)
                    targets.append(ll)
                except RuntimeError as exc:  # the cause is at the end of its log, after a long traceback
                    lines = str(exc).strip().splitlines()
                    why = "\n  ".join(lines[:1] + lines[-1:] if len(lines) > 2 else lines)
                    print(f"LiteLLM's proxy is left out : {why}", flush=True)
            print(f"ready in {time.perf_counter() - started:.0f}s: " + ", ".join(t.name for t in targets), flush=True)
            results = asyncio.run(measure(targets, vllm.pid, args))
        finally:
            for service in reversed(services):
                service.stop()
            vllm.stop()

    low, high = min(args.concurrency), max(args.concurrency)
    first, last = results[low], results[high]
    p50_added = first["router"].percentile_ms(50) - first["direct"].percentile_ms(50)
    p99_added = first["router"].percentile_ms(99) - first["direct"].percentile_ms(99)
    ratio, pooled, per_round = throughput_ratio(last, "router")
    ll_p50 = first["litellm"].percentile_ms(50) - first["direct"].percentile_ms(50) if "litellm" in first else math.nan
    ll_p99 = first["litellm"].percentile_ms(99) - first["direct"].percentile_ms(99) if "litellm" in first else math.nan
    ll_ratio = throughput_ratio(last, "litellm")[0] if "litellm" in last else math.nan
    rounds = " ".join(f"{r:.3f}" for r in per_round)
    print(f"router: throughput ratio per round {rounds}: median {ratio:.3f}, pooled {pooled:.3f}")
    print(f"litellm: p50 added {ll_p50:.2f} ms, p99 added {ll_p99:.2f} ms, throughput ratio {ll_ratio:.3f}")
    checks = {
        "p50 added <= 1 ms": p50_added <= 1.0,
        "p99 added <= 5 ms": p99_added <= 5.0,
        "throughput >= 0.95 of direct": ratio >= 0.95,
        "below LiteLLM's overhead": p50_added < ll_p50 if not math.isnan(ll_p50) else None,
    }
    verdict = {True: "met", False: "MISSED", None: "n/a"}
    print("targets: " + "; ".join(f"{k}: {verdict[v]}" for k, v in checks.items()))
    print(
        f"router_overhead p50_added_ms={p50_added:.3f} p99_added_ms={p99_added:.3f} "
        f"throughput_ratio={ratio:.3f} litellm_p50_added_ms={ll_p50:.3f}"
    )


if __name__ == "__main__":
    sys.exit(proctree.entry_point(main))  # SIGTERM, SIGHUP: the finally blocks stop every process
