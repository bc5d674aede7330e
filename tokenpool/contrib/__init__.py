"""Integrations with the places a pool gets embedded.

Each lives in its own module and imports its framework only when that module
is imported, so ``import tokenpool`` stays light:

- :mod:`tokenpool.contrib.celery`: one pool per Celery worker process (prefork,
  threads and solo pools), sync tasks get tokens and an ``httpx.Client``.
- :mod:`tokenpool.contrib.arq`: ``on_startup``/``on_shutdown`` hooks that put a
  pool and ``httpx.AsyncClient`` objects in an arq worker's ``ctx``.
- :mod:`tokenpool.contrib.locust`: one pool per Locust process, shared by all
  its simulated users, with the pool's event loop on a real OS thread
  (Locust runs on gevent).

Every integration takes a *providers factory*, a callable returning the
``{name: provider}`` mapping, and calls it in the process that will use the
pool, so secrets are read there (from the environment, a vault…) and never
pickled or inherited through ``fork()``.  See the README's "Integrations".
"""

from ._common import ProvidersFactory

__all__ = ["ProvidersFactory"]
