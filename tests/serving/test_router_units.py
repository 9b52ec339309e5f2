"""The router's pure parts: version choice (weights, stickiness), replica ranking, the table's rules, request
checks and key handling. No processes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from loraplane.serving.router import auth, sse
from loraplane.serving.router.errors import RouterError, new_request_id
from loraplane.serving.router.request import parse
from loraplane.serving.router.routing import SpreadPoints, choose_version, pick_point, rank_replicas, sticky_point
from loraplane.serving.router.table import AdapterVersion, PublicModel, ServerRoute, conflict, index


def model(*weights: int) -> PublicModel:
    return PublicModel(
        name="medical", versions=[AdapterVersion(name=f"v{i}", path=f"/a/{i}", weight=w) for i, w in enumerate(weights)]
    )


def test_versions_are_chosen_by_weight_and_weight_zero_never_serves() -> None:
    canary = model(80, 20)
    counts = Counter(choose_version(canary, i / 1000).name for i in range(1000))
    assert counts == {"v0": 800, "v1": 200}
    staged = model(100, 0)
    assert {choose_version(staged, i / 100).name for i in range(100)} == {"v0"}


def test_requests_without_a_session_split_by_weight_in_every_window() -> None:
    """Any 400 consecutive requests of one model land within 1 point of the weight, from any start."""
    for start in (0.0, 0.37, 0.999):
        spread = SpreadPoints(rng=lambda start=start: start)
        chosen = [choose_version(model(70, 30), pick_point(None, "medical", spread)).name for _ in range(2000)]
        for offset in range(0, 1600, 97):
            assert abs(chosen[offset : offset + 400].count("v1") - 120) <= 4, (start, offset)
    spread = SpreadPoints(rng=lambda: 0.5)
    assert spread("medical") == spread("finance") == 0.5  # each model has its own sequence
    assert pick_point("user-7", "medical", spread) == sticky_point("user-7", "medical")


def test_a_session_stays_on_one_version_and_sessions_spread() -> None:
    canary = model(50, 50)
    assert sticky_point("user-7", "medical") == sticky_point("user-7", "medical")
    assert sticky_point("user-7", "medical") != sticky_point("user-7", "finance")
    chosen = Counter(choose_version(canary, sticky_point(f"user-{i}", "medical")).name for i in range(2000))
    assert abs(chosen["v0"] - 1000) < 100


def test_replicas_ranked_by_holding_then_least_outstanding() -> None:
    holds = {"a": True, "b": True, "c": False}
    ranked = rank_replicas(["a", "b", "c"], usable=holds.__getitem__, outstanding={"a": 3, "b": 1})
    assert ranked == ["b", "a"]
    assert rank_replicas(["a", "b"], usable=lambda r: True, outstanding={}, exclude=frozenset({"b"})) == ["a"]
    firsts = {rank_replicas(["a", "b"], usable=lambda r: True, outstanding={}, rotation=i)[0] for i in range(4)}
    assert firsts == {"a", "b"}, "equal replicas take turns"


def test_table_rules() -> None:
    with pytest.raises(ValidationError, match="weights must add up to 100"):
        model(80, 30)
    with pytest.raises(ValidationError, match="unique within a server"):
        ServerRoute(base_model="base", adapters=[model(100), model(100)])
    medical = ServerRoute(base_model="base", replicas=["http://r1"], adapters=[model(100)])
    other = ServerRoute(base_model="base2", replicas=["http://r2"], adapters=[model(100)])
    assert "already served by server 'one'" in (conflict({"one": medical}, "two", other) or "")
    assert conflict({"one": medical}, "one", other) is None, "a server may replace its own route"
    assert set(index({"one": medical})) == {"base", "medical"}


@pytest.mark.parametrize(
    ("body", "endpoint", "param"),
    [
        (b"{not json", "chat", None),
        (b"[1, 2]", "chat", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "chat", "model"),
        (b'{"model": "m", "messages": "hi"}', "chat", "messages"),
        (b'{"model": "m"}', "completions", "prompt"),
        (b'{"model": "m", "prompt": "x", "stream": "yes"}', "completions", "stream"),
        (b'{"model": "m", "prompt": "x", "max_tokens": 0}', "completions", "max_tokens"),
        (b'{"model": "m", "prompt": "x", "stream": true, "stream_options": "usage"}', "completions", "stream_options"),
    ],
)
def test_malformed_requests_name_the_field(body: bytes, endpoint: str, param: str | None) -> None:
    with pytest.raises(RouterError) as info:
        parse(body, endpoint)
    assert info.value.status == 400 and info.value.param == param
    assert set(info.value.body()["error"]) == {"message", "type", "param", "code"}


def test_keys_limit_models_and_never_open_the_admin_api(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"k-med": {"models": ["medical"]}, "k-all": {"models": ["*"]}}))
    keys = auth.load_keys(path)
    assert auth.caller({"authorization": "Bearer k-med"}, keys).may_use("medical")
    assert not auth.caller({"authorization": "Bearer k-med"}, keys).may_use("finance")
    assert auth.caller({"authorization": "Bearer k-all"}, keys).may_use("finance")
    with pytest.raises(RouterError) as missing:
        auth.caller({}, keys)
    assert missing.value.status == 401
    with pytest.raises(RouterError) as user_key:
        auth.require_admin({"authorization": "Bearer k-all"}, "admin")
    assert user_key.value.status == 403
    auth.require_admin({"authorization": "Bearer admin"}, "admin")


def test_stream_events_are_cut_whole_and_only_the_final_usage_counts() -> None:
    stream = (
        b'data: {"choices":[{"delta":{"content":"Hi"}}],"usage":{"completion_tokens":1}}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\r\n\r\n'
        b"data: [DO"
    )
    events, rest = sse.split_events(stream)
    assert len(events) == 2 and b"".join(events) + rest == stream, "byte for byte, nothing lost"
    assert rest == b"data: [DO"
    assert sse.final_usage(events[0]) is None, "a running usage (continuous_usage_stats) is not the total"
    assert sse.final_usage(events[1]) == {"prompt_tokens": 5, "completion_tokens": 2}
    assert sse.split_events(b'data: {"choices":[]') == ([], b'data: {"choices":[]')
    assert sse.wants_usage({"stream_options": {"include_usage": True}})
    assert not sse.wants_usage({"stream_options": {"include_usage": False}}) and not sse.wants_usage({})


def test_request_ids_are_32_hex_digits_and_never_repeat() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in ids)
