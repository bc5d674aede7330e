"""The HTTP source's cap on token response bodies (``read_capped``), on in-process responses.

The same cap against real servers on loopback (a declared huge body, a chunked
one, a gzip bomb) is in ``test_http_source.py``.  These tests stay apart from
that file because they need no optional extra (no emulator, no trustme), so
the no-extras session (``nox -s tests_without_extras``) runs them too.
"""

from __future__ import annotations

import gzip

import httpx
import pytest

from tokenpool import InvalidTokenResponse
from tokenpool._http import read_capped

pytestmark = pytest.mark.anyio


class Chunks(httpx.AsyncByteStream):
    """A response body arriving in small chunks (an iterator object, not a generator)."""

    def __init__(self, body: bytes) -> None:
        self._chunks = [body[i : i + 7] for i in range(0, len(body), 7)]

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop(0)


def response(body: bytes, *, declared: bool = False, **headers: str) -> httpx.Response:
    if declared:
        headers["content-length"] = str(len(body))
    return httpx.Response(
        200, headers={k.replace("_", "-"): v for k, v in headers.items()}, stream=Chunks(body)
    )


async def test_an_already_read_response_is_capped_too() -> None:
    assert await read_capped(httpx.Response(200, json={"a": 1}), 100) == b'{"a":1}'
    with pytest.raises(InvalidTokenResponse, match="more than 10"):
        await read_capped(httpx.Response(200, content=b"x" * 11), 10)


async def test_compressed_bodies_are_decoded_under_the_same_cap() -> None:
    def gz(body: bytes) -> httpx.Response:
        return response(body, content_encoding="gzip")

    assert await read_capped(gz(gzip.compress(b"{}" * 10)), 100) == b"{}" * 10
    bomb = gzip.compress(b"0" * 10_000_000)
    assert len(bomb) < 65_536
    with pytest.raises(InvalidTokenResponse, match="once decompressed"):
        await read_capped(gz(bomb), 65_536)
    with pytest.raises(InvalidTokenResponse, match="cannot be decoded"):
        await read_capped(gz(b"nope"), 100)


async def read(body: bytes, limit: int, *, declared: bool) -> bytes:
    return await read_capped(response(body, declared=declared), limit)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_token_response_bodies_are_capped(declared: bool) -> None:
    assert await read(b"x" * 100, 100, declared=declared) == b"x" * 100
    with pytest.raises(InvalidTokenResponse, match="more than 100"):
        await read(b"x" * 101, 100, declared=declared)
