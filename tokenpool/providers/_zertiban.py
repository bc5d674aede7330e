"""Zertiban: form-encoded client credentials over HTTP Basic, tenant header on every call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx

from .._exceptions import ConfigurationError
from .._secret import Secret, as_secret
from .._timing import RefreshPolicy
from .._token import TokenResponse
from ._base import Provider, coerce_secret, require_policy, require_text
from ._parse import (
    basic_authorization,
    endpoint_url,
    error_for_status,
    error_in_body,
    json_object,
    require_header_value,
    require_path_segment,
    standard_token,
)

__all__ = ["Zertiban"]

ZertibanEnvironment = Literal["sandbox", "production"]

#: Base URLs.  Only the sandbox one is in Zertiban's documentation.
ZERTIBAN_BASE_URLS: Mapping[str, str] = {
    "sandbox": "https://nc-api-sandbox.zertiban.com",
    "production": "https://nc-api.zertiban.com",
}


@dataclass(frozen=True, eq=False, kw_only=True)
class Zertiban(Provider):
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

    client_id: str
    client_secret: str | Secret
    business_uuid: str
    environment: ZertibanEnvironment = "sandbox"
    base_url: str | None = None
    refresh: RefreshPolicy = field(default_factory=RefreshPolicy)
    token_url: httpx.URL = field(init=False)

    def __post_init__(self) -> None:
        require_text(self, "client_id")
        if ":" in self.client_id:
            raise ConfigurationError("Zertiban.client_id must not contain ':' (HTTP Basic splits there)")
        coerce_secret(self, "client_secret")
        require_path_segment(self, "business_uuid")
        require_header_value(self, "business_uuid")
        if self.environment not in ZERTIBAN_BASE_URLS:
            raise ConfigurationError(
                f"Zertiban.environment must be one of {sorted(ZERTIBAN_BASE_URLS)}, got {self.environment!r}"
            )
        base = ZERTIBAN_BASE_URLS[self.environment] if self.base_url is None else self.base_url
        object.__setattr__(
            self, "token_url", endpoint_url(base, "/idp/oauth2/token", what="Zertiban.base_url")
        )
        require_policy(self)

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

    def _parse(self, status_code: int, headers: Mapping[str, str], body: bytes) -> TokenResponse:
        hint = f"check clientId/clientSecret for the Zertiban {self.environment} environment"
        secrets = self._secrets()
        if status_code != 200:
            raise error_for_status(status_code, headers, body, credentials_hint=hint, secrets=secrets)
        data = json_object(body, status_code=status_code)
        error = error_in_body(data, status_code=status_code, credentials_hint=hint, secrets=secrets)
        if error is not None:
            raise error
        return standard_token(data, default_expires_in=300.0, secrets=secrets)

    def api_headers(self) -> Mapping[str, str]:
        return {"x-tenant-id": self.business_uuid}
