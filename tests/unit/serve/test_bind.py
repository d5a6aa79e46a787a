"""The listening socket `lmforge serve` hands to uvicorn: connections accepted on it run with
TCP_NODELAY. Without it each response waited ~40 ms for the client's delayed ACK (Nagle), which
measured 44 ms per `/tokenize` call and 46 ms of a 52 ms time to first token on the Xeon."""

from __future__ import annotations

import asyncio
import socket

import pytest

from lmforge.errors import ConfigError
from lmforge.serve.verb import _bind


def test_accepted_connections_have_nodelay() -> None:
    async def accept_one() -> int:
        sock = _bind("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(seen, 10)
            writer.close()
        return value

    assert asyncio.run(accept_one()) != 0


def test_a_taken_port_names_the_address_and_the_fix() -> None:
    taken = _bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}.*port="):
            _bind("127.0.0.1", port)
    finally:
        taken.close()
