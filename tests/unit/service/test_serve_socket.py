"""``stageflow serve``'s listening socket (``cli_serve._listen``)."""

from __future__ import annotations

import socket

import pytest

from stageflow.errors import UsageError
from stageflow.service.cli_serve import _listen


def test_the_socket_says_it_is_tcp_so_asyncio_turns_nagle_off() -> None:
    # asyncio sets TCP_NODELAY on accepted connections only when the listening socket's
    # proto is IPPROTO_TCP; with 0 every small answer waited ~40 ms for a delayed ACK.
    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_a_port_in_use_is_a_usage_error_naming_it() -> None:
    first = _listen("127.0.0.1", 0)
    port = first.getsockname()[1]
    try:
        with pytest.raises(UsageError, match=rf"cannot listen on 127\.0\.0\.1:{port}: .*--port"):
            _listen("127.0.0.1", port)
    finally:
        first.close()
