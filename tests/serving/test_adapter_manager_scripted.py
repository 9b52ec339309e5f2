"""The adapter manager against a scripted replica (tests/serving/scripted.py) for what real vLLM does not do
on cue: answer 503 for a while, or take its time loading. The manager against real vLLM is in
test_adapter_manager.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from loraplane.serving.adapter_manager import AdapterManager, DesiredAdapter, NoRouting, ReplicaReport
from loraplane.serving.vllm_client import VllmClient
from tests.serving.fixtures import ServeScripted
from tests.serving.scripted import ScriptedReplica, fake_adapter

BACKOFF = 0.2


async def reconciles(url: str, want: dict[str, DesiredAdapter], times: int, attempts: int) -> list[ReplicaReport]:
    """`times` reconciles of one replica at once, by one manager."""
    async with aiohttp.ClientSession() as session:
        manager = AdapterManager(VllmClient(session), NoRouting(), attempts=attempts, backoff=BACKOFF)
        return list(await asyncio.gather(*(manager.reconcile(url, want) for _ in range(times))))


def alpha(tmp_path: Path) -> dict[str, DesiredAdapter]:
    path, digest = fake_adapter(tmp_path / "alpha", "alpha")
    return {"alpha": DesiredAdapter("alpha", str(path), digest)}


def test_a_replica_that_answers_503_for_a_while_gets_its_adapter_after_backing_off(
    tmp_path: Path, serve_scripted: ServeScripted
) -> None:
    replica = ScriptedReplica("a")
    replica.load_failures = 2
    with serve_scripted(replica) as (url,):
        (report,) = asyncio.run(reconciles(url, alpha(tmp_path), times=1, attempts=4))
    assert report.healthy and report.loaded == {"alpha"} and not report.errors
    first, second, third = replica.load_times
    assert second - first >= BACKOFF and third - second >= 2 * BACKOFF, "exponential backoff"


def test_a_replica_still_failing_after_the_last_attempt_is_reported(
    tmp_path: Path, serve_scripted: ServeScripted
) -> None:
    replica = ScriptedReplica("a")
    replica.load_failures = 5
    with serve_scripted(replica) as (url,):
        (report,) = asyncio.run(reconciles(url, alpha(tmp_path), times=1, attempts=2))
    assert len(replica.load_times) == 2 and "alpha" not in report.loaded
    assert "503" in report.errors["alpha"] and "engine not ready" in report.errors["alpha"]


def test_two_reconciles_at_once_load_an_adapter_one_at_a_time(tmp_path: Path, serve_scripted: ServeScripted) -> None:
    replica = ScriptedReplica("a")
    replica.load_seconds = 0.3
    with serve_scripted(replica) as (url,):
        reports = asyncio.run(reconciles(url, alpha(tmp_path), times=2, attempts=1))
    assert replica.loads_at_once == 1, "one lock per adapter: the second load waits for the first"
    assert replica.log.count("load alpha") == 1, "the second finds it loaded (already loaded is success)"
    assert all(r.loaded == {"alpha"} and not r.errors for r in reports), reports


def test_the_manager_reads_no_files_and_hands_the_path_to_the_replica(
    tmp_path: Path, serve_scripted: ServeScripted
) -> None:
    """Checking an adapter before a load is the ReplicaApi's business (the agent's); the manager, as the router
    runs it for a bare vLLM replica, passes on a path only the replica can see."""
    elsewhere = {"alpha": DesiredAdapter("alpha", "/mnt/adapters/alpha-adapter/ns/alpha", "0" * 64)}
    replica = ScriptedReplica("a")
    with serve_scripted(replica) as (url,):
        (handed_on,) = asyncio.run(reconciles(url, elsewhere, times=1, attempts=1))
    assert handed_on.loaded == {"alpha"} and not handed_on.errors
    assert replica.log.count("load alpha") == 1
