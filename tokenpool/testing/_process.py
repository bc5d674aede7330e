"""Run the emulator as a child process and talk to its admin API.

The child is ``python -m tokenpool.testing --json --watch-stdin``: it prints one
JSON line when its listeners are up, and exits when told to (SIGTERM) or when
our end of its stdin closes, so it cannot outlive the process that started it
even if that one is killed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import anyio
import anyio.to_thread
import httpx

from ..providers import ClientCertificate
from ._admin_client import AdminClient, check_provider

__all__ = ["EmulatorError", "EmulatorProcess"]

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class EmulatorError(RuntimeError):
    """The emulator did not start, died, or refused an admin call."""


class EmulatorProcess(AdminClient):
    """The loopback emulator in a child process.

    Use it as a context manager, sync or async (asyncio or trio)::

        with EmulatorProcess(lifetime_scale=0.01) as emulator:
            url = emulator.url("zertiban")           # https://127.0.0.1:PORT/zertiban
            client_id, secret = emulator.credentials("zertiban")
            emulator.fault("zertiban", status=503, retry_after=2, count=3)
            emulator.stats()["providers"]["zertiban"]["token_requests"]

    Args:
        lifetime_scale: Multiplies every documented token lifetime (``expires_in``
            is ``max(1, round(L * scale))``).
        host: Loopback address for the listeners.
        startup_timeout: Seconds to wait for the ready line.
        stop_timeout: Seconds between SIGTERM and SIGKILL on exit.
        python: Interpreter for the child (default: this one).
        extra_args: More command-line options for the child.
        env: Extra environment variables for the child.
    """

    def __init__(
        self,
        *,
        lifetime_scale: float = 1.0,
        host: str = "127.0.0.1",
        startup_timeout: float = 60.0,
        stop_timeout: float = 5.0,
        python: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not 0 < lifetime_scale < float("inf"):
            raise ValueError("lifetime_scale must be a positive finite number")
        self.lifetime_scale = float(lifetime_scale)
        self.host = host
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._python = python or sys.executable
        self._extra_args = tuple(extra_args)
        self._env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._returncode: int | None = None
        self._threads: list[threading.Thread] = []
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._info: dict[str, Any] | None = None
        self._client: httpx.Client | None = None

    # ------------------------------------------------------------------ lifecycle

    def command(self) -> list[str]:
        """The child's command line.

        No ``--cert-dir``: the child makes its own temporary directory and removes
        it when it exits, also when it exits because this process died.
        """
        return [
            self._python,
            "-m",
            "tokenpool.testing",
            "--json",
            "--watch-stdin",
            "--host",
            self.host,
            "--lifetime-scale",
            repr(self.lifetime_scale),
            *self._extra_args,
        ]

    def start(self) -> Self:
        """Start the child and wait for its ready line (blocking)."""
        if self._proc is not None:
            raise EmulatorError("this EmulatorProcess is already started")
        env = os.environ.copy()
        env.update(self._env)
        # The child must import this very tokenpool, whatever its working directory.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
                self.command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            assert self._proc.stdout is not None
            assert self._proc.stderr is not None
            self._threads = [
                threading.Thread(target=self._pump_stdout, args=(self._proc.stdout,), daemon=True),
                threading.Thread(target=self._pump_stderr, args=(self._proc.stderr,), daemon=True),
            ]
            for thread in self._threads:
                thread.start()
            self._info = self._wait_ready(self._proc)
            self._client = httpx.Client(base_url=self._info["admin_url"], timeout=30.0)
        except BaseException:
            self.close()
            raise
        return self

    def _pump_stdout(self, stream: IO[bytes]) -> None:
        # Keep reading after the ready line so the child can never block on a full pipe.
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                self._lines.put(line)

    def _pump_stderr(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                self._stderr.append(line.decode("utf-8", "replace").rstrip("\n"))

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                line = self._lines.get(timeout=0.05)
            except queue.Empty:
                if proc.poll() is not None:
                    for thread in self._threads:
                        thread.join(timeout=2.0)  # collect the last of its stderr
                    raise EmulatorError(
                        f"the emulator exited with status {proc.returncode} before it was ready; "
                        f"its stderr:\n{self.stderr_tail()}"
                    ) from None
                if time.monotonic() >= deadline:
                    raise EmulatorError(
                        f"the emulator was not ready within {self.startup_timeout} s; its stderr:\n"
                        f"{self.stderr_tail()}"
                    ) from None
                continue
            try:
                info = json.loads(line)
            except ValueError:
                continue  # not ours (a stray print); the ready line is JSON
            if isinstance(info, dict) and info.get("emulator") == "tokenpool":
                return info

    def close(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after ``stop_timeout``) and clean up. Idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._returncode = proc.returncode
        # The child is gone, so its pipes are at end-of-file: the pumps finish on
        # their own, and only then are the streams closed under them.
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads = []
        if proc is not None:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()

    stop = close

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has been stopped."""
        return self._returncode if self._proc is None else self._proc.poll()

    def stderr_tail(self) -> str:
        """The last lines the child wrote on stderr."""
        return "\n".join(self._stderr)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        try:
            await anyio.to_thread.run_sync(self.start)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.close)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)

    # ------------------------------------------------------------------ what the ready line says

    @property
    def info(self) -> dict[str, Any]:
        """The ready document the child printed (see ``python -m tokenpool.testing --help``)."""
        if self._info is None or self._proc is None:
            raise EmulatorError("the emulator is not running; use it inside `with` / `async with`")
        return self._info

    @property
    def pid(self) -> int:
        """The child's process id."""
        return int(self.info["pid"])

    @property
    def admin_url(self) -> str:
        """Base URL of the admin API (plain HTTP listener)."""
        return str(self.info["admin_url"])

    def url(self, provider: str, *, tls: bool = True) -> str:
        """Base URL of *provider*: TLS by default (NTX MX: the mutual-TLS listener), else plain HTTP."""
        urls = self.info["urls"][check_provider(provider)]
        if not tls:
            return str(urls["http"])
        return str(urls["mtls" if provider == "ntxmx" else "https"])

    def token_url(self, provider: str, *, tls: bool = True) -> str:
        """Full token endpoint URL of *provider* (Navro's includes the default client's company)."""
        return self.url(provider, tls=tls) + str(self.info["token_paths"][provider])

    @property
    def ca_file(self) -> str:
        """PEM file of the test CA that signed the server and client certificates."""
        return str(self.info["ca_file"])

    @property
    def client_cert(self) -> ClientCertificate:
        """A valid client certificate (NTX MX mTLS and ``X-SSL-Client-Cert``)."""
        return self._certificate("client_cert")

    @property
    def revoked_client_cert(self) -> ClientCertificate:
        """A client certificate that passes the TLS handshake but that NTX MX treats as revoked (401)."""
        return self._certificate("revoked_client_cert")

    @property
    def expired_client_cert(self) -> ClientCertificate:
        """A client certificate whose validity ended yesterday (the mTLS handshake itself fails with it)."""
        return self._certificate("expired_client_cert")

    def _certificate(self, key: str) -> ClientCertificate:
        files = self.info[key]
        return ClientCertificate(cert_file=files["cert_file"], key_file=files["key_file"])

    def ssl_context(self, *, client_cert: ClientCertificate | bool = False) -> ssl.SSLContext:
        """A client SSL context trusting the test CA, optionally presenting a client certificate.

        Pass it to httpx as ``verify=``.  ``client_cert=True`` means :attr:`client_cert`.
        """
        context = ssl.create_default_context(cafile=self.ca_file)
        if client_cert is True:
            client_cert = self.client_cert
        if isinstance(client_cert, ClientCertificate):
            context.load_cert_chain(client_cert.cert_file, client_cert.key_file)
        return context

    # ------------------------------------------------------------------ admin API (see AdminClient)

    def _admin(self, method: str, action: str, **kwargs: Any) -> Any:
        if self._client is None:
            raise EmulatorError("the emulator is not running; use it inside `with` / `async with`")
        response = self._client.request(method, f"{self.admin_url}/{action}", **kwargs)
        if response.status_code >= 400:
            raise EmulatorError(
                f"admin {method} /_admin/{action} failed: HTTP {response.status_code} {response.text}"
            )
        return response.json()
