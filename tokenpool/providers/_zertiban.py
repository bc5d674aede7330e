"""Zertiban: form-encoded client credentials over HTTP Basic, tenant header on every call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx

from .._exceptions import ConfigurationError
from .._secret import Secret, as_secret
from .._timing import RefreshPolicy
from ._base import DeclarativeProvider
from ._settings import coerce_secret, require_header_value, require_path_segment, require_text
from ._wire import basic_authorization

__all__ = ["Zertiban"]

ZertibanEnvironment = Literal["sandbox", "production"]

#: Base URLs.  Only the sandbox one is in Zertiban's documentation.
ZERTIBAN_BASE_URLS: Mapping[str, str] = {
    "sandbox": "https://nc-api-sandbox.zertiban.com",
    "production": "https://nc-api.zertiban.com",
}


@dataclass(frozen=True, eq=False, kw_only=True)
class Zertiban(DeclarativeProvider):
    """Zertiban: ``grant_type=client_credentials`` with the credentials in HTTP Basic.

    ``POST {base}/idp/oauth2/token`` with the form body
    ``grant_type=client_credentials`` and ``Authorization: Basic``; every API
    call also carries ``x-tenant-id: {business_uuid}``.

    Args:
        client_id: ``clientId``; must not contain ``:`` (HTTP Basic splits there).
        client_secret: ``clientSecret`` (a ``str`` is wrapped in :class:`~tokenpool.Secret`).
        business_uuid: The ``businessUuid`` sent as ``x-tenant-id``.
        environment: ``"sandbox"`` or ``"production"``; picks the base URL.
        base_url: Overrides the environment's base URL; ``/idp/oauth2/token``
            is appended.  ``https`` unless loopback.
        refresh: When to renew and how to back off.

    Where Zertiban's documentation is silent or contradictory, this adapter chooses:

    - The production base URL ``https://nc-api.zertiban.com`` is *not* in the
      documentation we have (only the sandbox URL is).  Confirm it with
      Zertiban and pass ``base_url`` explicitly for production.
    - The Basic header is base64 of the *raw* ``clientId:clientSecret`` in
      UTF-8, exactly what curl ``-u``, requests ``auth=()``, axios ``auth`` and
      Spring ``setBasicAuth`` (all named by the doc) send -- not each part
      form-urlencoded first as RFC 6749 §2.3.1 asks; the two differ for
      secrets holding ``+ % : /``, spaces and the like, and the server is
      known to work with the clients the doc names.  Hence ``client_id`` may
      not contain ``:``.
    - The body is exactly ``grant_type=client_credentials``: no ``scope`` (the
      doc's historical note says it is not needed) and never the credentials.
    - The success status is not documented: only ``200`` is accepted.
    - ``expires_in`` is always taken from the answer (the doc says it varies);
      when absent, the documented default of 300 s is assumed.
    - ``business_uuid`` is not checked to be a UUID, only to be one
      non-empty run of visible ASCII without ``/``.
    - ``Accept: application/json`` is added (not in the examples).
    """

    kind = "zertiban"
    base_urls = ZERTIBAN_BASE_URLS
    endpoint_path = "/idp/oauth2/token"
    default_expires_in = 300.0

    client_id: str
    client_secret: str | Secret
    business_uuid: str
    environment: ZertibanEnvironment = "sandbox"
    base_url: str | None = None
    refresh: RefreshPolicy = field(default_factory=RefreshPolicy)
    token_url: httpx.URL = field(init=False)

    def _check_settings(self) -> None:
        require_text(self, "client_id")
        if ":" in self.client_id:
            raise ConfigurationError("Zertiban.client_id must not contain ':' (HTTP Basic splits there)")
        coerce_secret(self, "client_secret")
        require_path_segment(self, "business_uuid")
        require_header_value(self, "business_uuid")

    def build_request(self) -> httpx.Request:
        headers = {
            "Authorization": self._basic_authorization(),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        return httpx.Request(
            "POST", self.token_url, content=b"grant_type=client_credentials", headers=headers
        )

    def _basic_authorization(self) -> str:
        """The raw ``clientId:clientSecret`` in HTTP Basic, as curl ``-u`` builds it."""
        return basic_authorization(self.client_id, as_secret(self.client_secret).reveal())

    def credentials_hint(self) -> str:
        where = self._where(f"the Zertiban {self.environment} environment")
        return f"check clientId/clientSecret for {where}"

    def api_headers(self) -> Mapping[str, str]:
        return {"x-tenant-id": self.business_uuid}
