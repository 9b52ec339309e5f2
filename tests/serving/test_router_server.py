"""How the router is served (router/server.py): a response's head leaves with its body, in one write.

The transport under `HeadWithBodyTransport` in the first tests is a recorder standing in for uvloop's socket
transport: how many send calls a socket was handed can't be read back from a real one. The last tests run
the real router over real sockets (so does every test in test_router*.py, streams included).
"""

from __future__ import annotations

import socket
from typing import Any

from loraplane.serving.router.server import HeadWithBodyTransport, HttpProtocol
from tests.serving.fixtures import ServeRouter

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    """Stands in for the socket transport: records each write and the close, in order."""

    def __init__(self) -> None:
        self.calls: list[bytes | str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(bytes(data))

    def close(self) -> None:
        self.closing = True
        self.calls.append("close")

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name == "sockname" else default


def wrapped() -> tuple[HeadWithBodyTransport, RecordingTransport]:
    under = RecordingTransport()
    return HeadWithBodyTransport(under), under  # type: ignore[arg-type]


def test_a_head_leaves_with_the_first_body_write_and_a_stream_goes_out_as_it_comes() -> None:
    transport, under = wrapped()
    transport.write(HEAD)
    assert under.calls == []  # held for its body
    transport.write(b"{}")
    assert under.calls == [HEAD + b"{}"]
    transport.next_response()  # complete; the next response on this connection
    transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    transport.write(b"9\r\ndata: 1\n\n\r\n")
    transport.write(b"9\r\ndata: 2\n\n\r\n")  # later events: each sent as it comes
    assert under.calls[1:] == [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n",
        b"9\r\ndata: 2\n\n\r\n",
    ]


def test_continue_goes_out_at_once_and_completion_or_close_send_a_lone_head() -> None:
    transport, under = wrapped()
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert under.calls == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # the client waits for it to send its body
    transport.write(HEAD)
    transport.next_response()  # a HEAD request's answer: complete without a body write
    assert under.calls[1:] == [HEAD]
    transport.write(HEAD)
    transport.close()
    assert under.calls[2:] == [HEAD, "close"]
    transport.write(b"late")  # after close: dropped, as the socket transport drops it
    transport.write(b"later")
    assert under.calls[2:] == [HEAD, "close"]


def test_everything_else_is_the_wrapped_transports() -> None:
    transport, under = wrapped()
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8080)
    assert transport.is_closing() is False
    under.closing = True
    assert transport.is_closing() is True


def test_the_running_router_answers_get_head_and_expect_continue(serve_router: ServeRouter) -> None:
    with serve_router() as router:
        kept = []
        for _ in range(2):  # first and later answers, all on one keep-alive connection
            head = router.http.head("/healthz")  # no body write at all: the head leaves when the answer is done
            assert head.status_code == 200 and head.content == b""  # (not when keep-alive times out and closes)
            kept.append(set(router.server.server_state.connections))
            resp = router.http.get("/healthz")
            assert resp.status_code == 200 and resp.json() == {"status": "ok"}
            kept.append(set(router.server.server_state.connections))
        assert len(kept[0]) == 1 and all(open_now == kept[0] for open_now in kept)
        (connection,) = kept[0]
        assert isinstance(connection, HttpProtocol) and isinstance(connection.transport, HeadWithBodyTransport)

        host, port = router.url.removeprefix("http://").split(":")
        body = b'{"model": "nowhere", "messages": [{"role": "user", "content": "hi"}]}'
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n")  # before the body is sent
            sock.sendall(body)
            answer = b""
            while b'"code":"model_not_found"' not in answer and len(answer) < 65536:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed after {answer!r}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 404 ")
