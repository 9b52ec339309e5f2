"""Adapter ready -> first answer, pulled from a registry through the adapter agent vs read from a directory.

One real vLLM replica (CPU build), the adapter agent next to it, the router as a process and a real registry
(Debian's docker-registry), all on loopback. Each run makes a new random-weight adapter and, alternately:

- oci: pushes it (the adapter is "ready" when the push returned, as a FineTuneJob with spec.output.uri is
  when it Succeeded), puts a route naming its pinned `oci://…@sha256:…`; the router puts it to the agent,
  which pulls, verifies and has vLLM load it;
- pvc: puts a route naming its directory (the PVC path: the agent verifies the files where they are, on the
  claim both containers mount, and vLLM reads them there).

and times from "ready" to the first 200 answer from that version through the router. The operator's hop
(watch -> route) is not in it: bench/rollout_latency.py measures that.

    python bench/adapter_ready.py [--runs 10] [--smollm2]

Last line: `adapter_ready oci_p50_s=<f> oci_p99_s=<f> pvc_p50_s=<f> pvc_p99_s=<f>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loraplane.api.oci import OciRef  # noqa: E402
from loraplane.api.result import TrainingResult  # noqa: E402
from loraplane.api.route import AdapterVersion, PublicModel, ServerRoute  # noqa: E402
from loraplane.serving.oci_store import RegistryAccess, push  # noqa: E402
from tests.support.agent import agent_service, wait_up  # noqa: E402
from tests.support.bench import nearest_rank  # noqa: E402
from tests.support.kube import poll  # noqa: E402
from tests.support.ms_helpers import RouterProcess, chat  # noqa: E402
from tests.support.registry import private_registry  # noqa: E402
from tests.support.serving import BASE_NAME, PAIR_SPEC, vllm_server, write_adapter  # noqa: E402


def base_model(work: Path, smollm2: bool) -> Path:
    if not smollm2:
        from tests.support.tiny import build_tiny_base

        return build_tiny_base(work / "tiny")
    from loraplane.api.common import ModelSource
    from loraplane.trainer.models import resolve_model

    cache = Path.home() / ".cache/loraplane/models"
    return resolve_model(
        ModelSource(uri="builtin://smollm2-135m-instruct"), cache_dir=cache, pvc_root=work, token=None
    ).path


def put_route(router: RouterProcess, replica: str, agent_port: int, name: str, path: str, sha256: str) -> None:
    route = ServerRoute(
        base_model=BASE_NAME,
        replicas=[replica],
        adapters=[PublicModel(name="ready", versions=[AdapterVersion(name=name, path=path, sha256=sha256)])],
        agent_port=agent_port,
    )
    request = urllib.request.Request(
        f"{router.url}/admin/v1/servers/bench",
        data=json.dumps(route.model_dump()).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {router.admin_key}"},
    )
    urllib.request.urlopen(request, timeout=30).close()


def first_answer(router: RouterProcess, name: str, timeout: float) -> None:
    def answered() -> bool:
        status, body = chat(router.url, "ready", max_tokens=1, timeout=60)
        return status == 200 and body.get("model") == name

    poll(f"the first answer from {name}", answered, timeout=timeout, interval=0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10, help="runs of each path")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--smollm2", action="store_true", help="the packaged SmolLM2-135M (default: the tiny Llama)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-adapter-ready-") as tmp:
        work = Path(tmp)
        base = base_model(work, args.smollm2)
        times: dict[str, list[float]] = {"oci": [], "pvc": []}
        with private_registry(work / "registry") as registry:
            replica = vllm_server(base, PAIR_SPEC, work / "vllm.log", start_timeout=900)
            replica.start()
            agent = agent_service(replica.url, work / "cache", work / "agent.log", plain_http="true")
            router = RouterProcess(work / "router.log")
            try:
                agent.start()
                wait_up(agent)
                router.start()
                agent_port = int(agent.url.rsplit(":", 1)[1])
                for i in range(args.runs * 2):
                    kind = ("oci", "pvc")[i % 2]
                    name = f"ready-{i}"
                    adapter = write_adapter(base, work / "adapters" / name, name=name, seed=100 + i)
                    result = TrainingResult.read(adapter)
                    assert result is not None and result.adapter is not None
                    if kind == "oci":
                        ref = OciRef.parse(f"oci://{registry.addr}/bench/{name}:v1")
                        path = str(push(adapter, ref, RegistryAccess(plain_http=True)).ref)
                    else:
                        path = str(adapter)
                    ready = time.monotonic()
                    put_route(router, replica.url, agent_port, name, path, result.adapter.sha256)
                    first_answer(router, name, args.timeout)
                    seconds = time.monotonic() - ready
                    times[kind].append(seconds)
                    print(f"run {i // 2 + 1} {kind}: ready -> first answer {seconds:.2f}s", flush=True)
            finally:
                router.stop()
                agent.stop()
                replica.stop()

    def q(kind: str, p: float) -> str:
        return f"{nearest_rank(times[kind], p):.2f}"

    parts = [f"{kind}_p{p}_s={q(kind, p)}" for kind in ("oci", "pvc") for p in (50, 99)]
    print("adapter_ready " + " ".join(parts))


if __name__ == "__main__":
    main()
