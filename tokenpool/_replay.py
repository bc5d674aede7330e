"""Request bodies that can be sent twice: a streaming body recorded while it goes out, within a bound.

Request bodies are not buffered up front.  A streaming body (a generator, an
async iterator, a file) is recorded while it is sent, up to
:data:`MAX_REPLAY_BODY_BYTES`; after a 401 it is replayed from that recording
when the whole body fit.  A larger body cannot be replayed: the 401 is returned
as it is, logged as ``token.replay_skipped`` and counted as unauthorized
without a retry.  Bytes bodies (``content=b"…"``, ``json=``, ``data=``) replay
as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx

from ._auth_flow import CannotReplay

__all__ = ["MAX_REPLAY_BODY_BYTES", "AsyncBodyTee", "BodyRecording", "SyncBodyTee"]

#: The largest streaming request body that is recorded while it is sent, so
#: that it can be replayed after a 401 (1 MiB).  A longer body is still sent
#: in full, but only the 401 comes back: memory per request stays bounded
#: however large the uploads are.  Bytes bodies are not affected.
MAX_REPLAY_BODY_BYTES = 1024 * 1024


class BodyRecording:
    """The bytes of a streaming body as it went out, kept while they fit in the replay bound."""

    __slots__ = ("_chunks", "_size", "complete", "overflowed")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        #: The source ran out: everything it had was sent (and seen here).
        self.complete = False
        #: More than MAX_REPLAY_BODY_BYTES went out; nothing is kept.
        self.overflowed = False

    def add(self, chunk: bytes) -> None:
        if self.overflowed:
            return
        self._size += len(chunk)
        if self._size > MAX_REPLAY_BODY_BYTES:
            self.overflowed = True
            self._chunks = []  # let the memory go now, not when the request ends
        else:
            self._chunks.append(chunk)

    def replayable(self) -> bytes | CannotReplay:
        """The whole body, or why it cannot be sent again."""
        if self.overflowed:
            return CannotReplay("body_too_large")
        if not self.complete:
            # Answered before the body was read to its end: the rest is
            # still in the source, which must not be read twice.
            return CannotReplay("body_not_fully_sent")
        return b"".join(self._chunks)


class SyncBodyTee(httpx.SyncByteStream):
    """Passes a sync request stream through unchanged while recording it."""

    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self._inner = inner
        self.recording = BodyRecording()

    def __iter__(self) -> Iterator[bytes]:
        recording = self.recording
        for chunk in self._inner:
            recording.add(chunk)
            yield chunk
        recording.complete = True

    def close(self) -> None:
        self._inner.close()


class AsyncBodyTee(httpx.AsyncByteStream):
    """Passes an async request stream through unchanged while recording it."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner
        self.recording = BodyRecording()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        recording = self.recording
        async for chunk in self._inner:
            recording.add(chunk)
            yield chunk
        recording.complete = True

    async def aclose(self) -> None:
        await self._inner.aclose()
