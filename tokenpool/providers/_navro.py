"""Navro: form-encoded client credentials over HTTP Basic, per-company token path, versioned API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import httpx

from .._exceptions import ConfigurationError
from .._secret import Secret, as_secret
from .._timing import RefreshPolicy
from ._base import DeclarativeProvider
from ._settings import coerce_secret, require_header_value, require_path_segment, require_text
from ._wire import basic_authorization

__all__ = ["Navro"]

NavroEnvironment = Literal["sandbox", "production"]

#: Base URLs, as documented.
NAVRO_BASE_URLS: Mapping[str, str] = {
    "sandbox": "https://api.sandbox.navro.cloud",
    "production": "https://api.navro.cloud",
}


@dataclass(frozen=True, eq=False, kw_only=True)
class Navro(DeclarativeProvider):
    """Navro: ``client_credentials`` with ``scope=openid`` over HTTP Basic, per company.

    ``POST {base}/authentication/{company}/token`` with ``X-API-Version``,
    ``Authorization: Basic`` and the form body
    ``grant_type=client_credentials&scope=openid``; every API call also
    carries ``X-API-Version``.  Tokens live 300 s.

    Args:
        client_id: The ``client_id`` from the Navro Hub; must not contain ``:``.
        client_secret: The secret key (a ``str`` is wrapped in :class:`~tokenpool.Secret`).
        company: The ``<company name>`` path segment of the token URL
            (percent-encoded there).
        environment: ``"sandbox"`` or ``"production"``; picks the base URL.
        base_url: Overrides the environment's base URL;
            ``/authentication/{company}/token`` is appended.  ``https`` unless
            loopback.
        api_version: ``X-API-Version`` on the token request and every API call.
        refresh: When to renew and how to back off.

    Where Navro's documentation is silent or contradictory, this adapter chooses:

    - The prose says to encode the parameters as ``multipart/form-data``, but
      both curl examples send ``application/x-www-form-urlencoded``
      (``--data-urlencode``).  We send urlencoded, as the examples do.
    - The Basic header is base64 of the *raw* ``client_id:secret`` in UTF-8,
      as the doc describes and curl builds it -- not each part form-urlencoded
      first as RFC 6749 §2.3.1 asks.  Hence ``client_id`` may not contain ``:``.
    - The token request carries ``X-API-Version: {api_version}`` (``1`` by
      default, as in the examples), the same value as API calls.
    - ``company`` is percent-encoded as one path segment; ``/``, whitespace,
      ``.`` and ``..`` are refused.
    - The success status is not documented: only ``200`` is accepted.
    - ``expires_in`` is used when present; when absent, the documented 300 s is
      assumed.
    - A reset secret makes the old one fail with ``401``: that is
      ``CredentialsRejected`` with a hint to swap the credentials in the
      running pool.
    - ``Accept: application/json`` is added (not in the examples).
    """

    kind = "navro"
    base_urls = NAVRO_BASE_URLS
    endpoint_path = "/authentication/{company}/token"
    default_expires_in = 300.0
    status_hints: ClassVar[Mapping[int, str]] = {
        401: "if the client secret was reset in the Navro Hub, the old one now fails: configure the new one "
        "(a running pool takes it through "
        "pool.replace_provider(name, provider.with_credentials(client_secret=...)))",
    }

    client_id: str
    client_secret: str | Secret
    company: str
    environment: NavroEnvironment = "sandbox"
    base_url: str | None = None
    api_version: str = "1"
    refresh: RefreshPolicy = field(default_factory=RefreshPolicy)
    token_url: httpx.URL = field(init=False)

    def _check_settings(self) -> None:
        require_text(self, "client_id")
        if ":" in self.client_id:
            raise ConfigurationError("Navro.client_id must not contain ':' (HTTP Basic splits there)")
        coerce_secret(self, "client_secret")
        require_path_segment(self, "company")
        require_header_value(self, "api_version")

    def build_request(self) -> httpx.Request:
        headers = {
            "X-API-Version": self.api_version,
            "Authorization": self._basic_authorization(),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        body = b"grant_type=client_credentials&scope=openid"
        return httpx.Request("POST", self.token_url, content=body, headers=headers)

    def _basic_authorization(self) -> str:
        """The raw ``client_id:secret`` in HTTP Basic, as the doc describes it."""
        return basic_authorization(self.client_id, as_secret(self.client_secret).reveal())

    def credentials_hint(self) -> str:
        where = self._where(f"the Navro {self.environment} Hub")
        return f"check client_id/secret for company {self.company!r} in {where}"

    def api_headers(self) -> Mapping[str, str]:
        return {"X-API-Version": self.api_version}
