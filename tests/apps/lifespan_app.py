"""A Starlette app whose lifespan opens a TokenPool; tests/pool/test_lifecycle.py serves it with hypercorn.

The pool is opened when the server starts and closed when it stops, by
Starlette's ``lifespan`` context manager, as a web service would do it.
Each step of the lifespan is printed to stdout as one JSON line
(``{"lifespan": "..."}``) for the test to read back after the server exits.
The route ``GET /token`` answers with the token's type and lifetime, never the
token itself.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tokenpool import PoolStateError, TokenPool
from tokenpool.providers import ClientCredentials


def journal(step: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"lifespan": step, "pid": os.getpid(), **fields}) + "\n")
    sys.stdout.flush()


def make_pool() -> TokenPool:
    provider = ClientCredentials(
        token_url=os.environ["TOKENPOOL_TEST_TOKEN_URL"],
        client_id=os.environ["TOKENPOOL_TEST_CLIENT_ID"],
        client_secret=os.environ["TOKENPOOL_TEST_CLIENT_SECRET"],
    )
    return TokenPool({"x": provider}, ca_file=os.environ["TOKENPOOL_TEST_CA_FILE"])


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    pool = make_pool()
    try:
        async with pool:
            app.state.pool = pool
            journal("opened")
            yield
            journal("closing")
    except BaseException as exc:
        journal("failed", error=type(exc).__name__, message=str(exc)[:500])
        raise
    journal("closed")
    try:
        await pool.token("x")
    except PoolStateError:
        journal("refuses tokens after close")
    else:
        journal("served a token after close")


async def token_route(request: Request) -> JSONResponse:
    pool: TokenPool = request.app.state.pool
    token = await pool.token("x")
    return JSONResponse({"token_type": token.token_type, "expires_in": token.expires_in})


app = Starlette(routes=[Route("/token", token_route)], lifespan=lifespan)
