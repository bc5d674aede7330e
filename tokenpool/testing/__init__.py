"""A loopback emulator of the payment providers' token endpoints, for tests, demos and benchmarks.

``import tokenpool.testing`` is cheap: the server (hypercorn), the certificate
generator (trustme) and the process runner load on first use.

* :class:`EmulatorProcess` runs ``python -m tokenpool.testing`` as a child process
  (three loopback listeners: plain HTTP, HTTPS, mutual TLS) and drives its admin API.
* :class:`EmulatorApp` is the emulator as a plain ASGI 3 application, to serve
  yourself or to call in process through ``httpx.ASGITransport``.
* :func:`generate_certificates` writes a throw-away test CA and certificates.
* :class:`RedisServerProcess` runs a throw-away ``redis-server`` on loopback (no
  persistence; kill and restart on the same port) for the fleet tier's tests and
  benchmarks.  Blocking: it is for test setup.
* :class:`ManualClock` is a clock that moves only when told to, for tests of
  code that uses a :class:`~tokenpool.TokenPool` (``TokenPool(..., clock=...)``).
* :data:`MALFORMED_KINDS` names the malformed answers a fault can make the
  token endpoints give.
* :func:`emulator_main` is the command line of ``python -m tokenpool.testing``
  (and ``tokenpool emulator``).
* ``tokenpool.testing.pytest_plugin`` gives the ``tokenpool_emulator`` (session)
  and ``emulator`` (reset per test) fixtures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._constants import PROVIDERS

if TYPE_CHECKING:
    from .._clock import ManualClock
    from ._app import EmulatorApp
    from ._certs import CertificateFiles, generate_certificates
    from ._faults import MALFORMED_KINDS
    from ._process import EmulatorError, EmulatorProcess
    from ._redis import RedisServerProcess
    from ._server import emulator_main
    from ._settings import ClientSpec, EmulatorSettings

__all__ = [
    "MALFORMED_KINDS",
    "PROVIDERS",
    "CertificateFiles",
    "ClientSpec",
    "EmulatorApp",
    "EmulatorError",
    "EmulatorProcess",
    "EmulatorSettings",
    "ManualClock",
    "RedisServerProcess",
    "emulator_main",
    "generate_certificates",
]

_LAZY = {
    "ClientSpec": "._settings",
    "EmulatorApp": "._app",
    "EmulatorSettings": "._settings",
    "CertificateFiles": "._certs",
    "generate_certificates": "._certs",
    "EmulatorError": "._process",
    "EmulatorProcess": "._process",
    "MALFORMED_KINDS": "._faults",
    "RedisServerProcess": "._redis",
    "emulator_main": "._server",
    "ManualClock": "tokenpool._clock",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
