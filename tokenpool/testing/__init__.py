"""A loopback emulator of the payment providers' token endpoints, for tests, demos and benchmarks.

``import tokenpool.testing`` is cheap: the server (hypercorn), the certificate
generator (trustme) and the process runner load on first use.

* :class:`EmulatorProcess` runs ``python -m tokenpool.testing`` as a child process
  (three loopback listeners: plain HTTP, HTTPS, mutual TLS) and drives its admin API.
* :class:`EmulatorApp` is the emulator as a plain ASGI 3 application, to serve
  yourself or to call in process through ``httpx.ASGITransport``.
* :func:`generate_certificates` writes a throw-away test CA and certificates.
* ``tokenpool.testing.pytest_plugin`` gives the ``tokenpool_emulator`` (session)
  and ``emulator`` (reset per test) fixtures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._constants import PROVIDERS

if TYPE_CHECKING:
    from ._app import ClientSpec, EmulatorApp, EmulatorSettings
    from ._certs import CertificateFiles, generate_certificates
    from ._process import EmulatorError, EmulatorProcess

__all__ = [
    "PROVIDERS",
    "CertificateFiles",
    "ClientSpec",
    "EmulatorApp",
    "EmulatorError",
    "EmulatorProcess",
    "EmulatorSettings",
    "generate_certificates",
]

_LAZY = {
    "ClientSpec": "._app",
    "EmulatorApp": "._app",
    "EmulatorSettings": "._app",
    "CertificateFiles": "._certs",
    "generate_certificates": "._certs",
    "EmulatorError": "._process",
    "EmulatorProcess": "._process",
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
