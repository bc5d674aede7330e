"""Pay-me (Alignet): snake_case JSON with ``action``/``audience`` and a ``success`` flag."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from .._exceptions import ConfigurationError, CredentialsRejected, InvalidTokenResponse, TokenRequestError
from .._scrub import safe_text
from .._secret import Secret, as_secret
from .._timing import RefreshPolicy
from ._base import DeclarativeProvider
from ._parse import CREDENTIAL_ERROR_CODES, CREDENTIAL_STATUSES, error_fields, json_object
from ._settings import coerce_secret, require_header_value, require_text
from ._wire import json_body

__all__ = ["PayMe"]

PayMeEnvironment = Literal["preproduction", "production"]

#: Token endpoints are ``{base}/token``, as documented.
PAYME_BASE_URLS: Mapping[str, str] = {
    "preproduction": "https://auth.preprod.alignet.io",
    "production": "https://auth.alignet.io",
}

#: ``authorization.meta.status.code`` of a successful answer.
_STATUS_OK = "00"
#: Fragments of an error code that mean "your credentials were refused".
_AUTH_CODE_FRAGMENTS = ("unauthori", "forbidden", "credential", "denied", "invalid_client")


def _meta_status(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``authorization.meta.status`` if every level of it is an object."""
    node: object = data
    for key in ("authorization", "meta", "status"):
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node if isinstance(node, Mapping) else None


def _messages(status: Mapping[str, Any] | None) -> list[str]:
    """The ``value`` of every ``message_ilgn`` entry (one per locale)."""
    entries = status.get("message_ilgn") if status else None
    if not isinstance(entries, list):
        return []
    return [e["value"] for e in entries if isinstance(e, Mapping) and isinstance(e.get("value"), str)]


def _looks_like_auth(code: str | None) -> bool:
    if code is None:
        return False
    lowered = code.strip().lower()
    return (
        lowered in CREDENTIAL_ERROR_CODES
        or lowered in {"401", "403"}
        or any(fragment in lowered for fragment in _AUTH_CODE_FRAGMENTS)
    )


@dataclass(frozen=True, eq=False, kw_only=True)
class PayMe(DeclarativeProvider):
    """Pay-me by Alignet: ``client_credentials`` in a JSON body with ``action`` and ``audience``.

    ``POST`` to the environment's ``/token`` with ``ALG-API-VERSION`` and
    ``{"action": "authorize", "grant_type": "client_credentials", "audience",
    "client_id", "client_secret", "scope"}``.  A token is issued only when the
    answer says ``"success": true``.

    Args:
        client_id: The client identifier.
        client_secret: The client secret (a ``str`` is wrapped in :class:`~tokenpool.Secret`).
        audience: The API's base URL for this environment.  Required: the doc
            says it is the API's base URL but never gives it.  Sent verbatim.
        environment: ``"preproduction"`` or ``"production"``; picks the token URL.
        base_url: Overrides the environment's token URL with ``{base_url}/token``.
            ``https`` unless loopback.
        scope: Space-separated scopes; must include ``create:token``, which the
            doc calls mandatory.
        api_version: ``ALG-API-VERSION`` on the token request and every API call.
        refresh: When to renew and how to back off.

    Where Pay-me's documentation is silent or contradictory, this adapter chooses:

    - The audience value is not given anywhere, so it is a required argument
      and is not checked beyond being non-empty.
    - ``scope`` must contain ``create:token`` as a whole space-separated word;
      checked at construction.
    - The success status is not documented: ``200`` and ``201`` are accepted,
      but only with ``"success": true`` (exactly the JSON ``true``).  Anything
      else, even on ``200``, is a failure.
    - ``authorization.meta.status.code`` is optional, but if present it must
      be exactly the string ``"00"`` (the only code the doc shows).  An
      ``authorization`` that is not an object is ignored.  ``action`` in the
      answer is not checked.
    - Failure codes are not documented.  A failure is ``CredentialsRejected``
      on HTTP 400/401/403 or when the code looks like an auth error (an RFC
      6749 client error, ``401``/``403``, or containing ``unauthori``,
      ``forbidden``, ``credential``, ``denied``, ``invalid_client``); any other
      ``success`` other than ``true`` is ``InvalidTokenResponse``.  5xx, 429
      and 408 are ``TokenEndpointError``.  The ``message_ilgn`` values go into
      the error message, scrubbed, printable and truncated.
    - No default lifetime is documented (the example says 8600 s): a missing
      ``expires_in`` is an ``InvalidTokenResponse``, never a guess.
    - ``Accept: application/json`` is added (not in the header table).
    """

    kind = "payme"
    base_urls = PAYME_BASE_URLS
    endpoint_path = "/token"
    success_statuses = frozenset({200, 201})

    client_id: str
    client_secret: str | Secret
    audience: str
    environment: PayMeEnvironment = "preproduction"
    base_url: str | None = None
    scope: str = "create:token post:charges get:charges delete:charges"
    api_version: str = "1709847567"
    refresh: RefreshPolicy = field(default_factory=RefreshPolicy)
    token_url: httpx.URL = field(init=False)

    def _check_settings(self) -> None:
        require_text(self, "client_id")
        coerce_secret(self, "client_secret")
        require_text(self, "audience")
        require_text(self, "scope")
        if "create:token" not in self.scope.split():
            raise ConfigurationError("PayMe.scope must include 'create:token' (Pay-me requires it)")
        require_header_value(self, "api_version")

    def build_request(self) -> httpx.Request:
        body = json_body(
            {
                "action": "authorize",
                "grant_type": "client_credentials",
                "audience": self.audience,
                "client_id": self.client_id,
                "client_secret": as_secret(self.client_secret).reveal(),
                "scope": self.scope,
            }
        )
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "ALG-API-VERSION": self.api_version,
        }
        return httpx.Request("POST", self.token_url, content=body, headers=headers)

    def credentials_hint(self) -> str:
        return (
            "check client_id/client_secret, audience and scope for "
            f"{self._where(f'the Pay-me {self.environment} environment')}"
        )

    def _refusal(
        self, status_code: int, headers: Mapping[str, str], body: bytes, secrets: list[str]
    ) -> TokenRequestError:
        # A refused client gets Pay-me's own answer shape, which tells more than the status.
        if status_code in CREDENTIAL_STATUSES:
            try:
                data = json_object(body, status_code=status_code)
            except InvalidTokenResponse:
                pass
            else:
                return self._failure(data, status_code, secrets)
        return super()._refusal(status_code, headers, body, secrets)

    def _answer_error(
        self, data: Mapping[str, Any], status_code: int, secrets: list[str]
    ) -> TokenRequestError | None:
        status = _meta_status(data)
        code = status.get("code") if status else None
        if data.get("success") is not True or (code is not None and code != _STATUS_OK) or data.get("error"):
            return self._failure(data, status_code, secrets)
        if data.get("expires_in") is None:
            return InvalidTokenResponse(
                "Pay-me answered without 'expires_in'",
                status_code=status_code,
                hint="Pay-me documents no default lifetime, and tokenpool does not guess one",
            )
        return None

    def _failure(self, data: Mapping[str, Any], status_code: int, secrets: list[str]) -> TokenRequestError:
        """The error a decoded answer that carries no token stands for."""
        status = _meta_status(data)
        code = status.get("code") if status else None
        success = data.get("success")
        rfc_code, rfc_description = error_fields(data, secrets)
        meta_code = safe_text(str(code), secrets, 64) if isinstance(code, str | int) else None
        meta_said = safe_text(" / ".join(_messages(status)), secrets) or None
        shown_code: str | None
        said: str | None
        if rfc_code is not None and meta_code in (None, _STATUS_OK):
            # An RFC 6749 error beside a successful-looking status: the error is what counts.
            shown_code, said = rfc_code, rfc_description or meta_said
        else:
            shown_code, said = meta_code or rfc_code, meta_said or rfc_description
        if success is not True:
            reason = 'Pay-me answered without "success": true'
        elif code is not None and code != _STATUS_OK:
            reason = 'Pay-me answered with a status code other than "00"'
        else:
            reason = "Pay-me refused the request"
        message = reason + (f": {said}" if said else "")
        if status_code in CREDENTIAL_STATUSES or _looks_like_auth(shown_code) or _looks_like_auth(rfc_code):
            return CredentialsRejected(
                message, status_code=status_code, error_code=shown_code, hint=self.credentials_hint()
            )
        return InvalidTokenResponse(message, status_code=status_code, error_code=shown_code)

    def api_headers(self) -> Mapping[str, str]:
        return {"ALG-API-VERSION": self.api_version}
