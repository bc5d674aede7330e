"""RFC 6749 §4.4 client credentials, for any standards-following token endpoint."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx

from .._exceptions import ConfigurationError
from .._secret import Secret, as_secret
from .._timing import RefreshPolicy
from .._token import TokenResponse
from .._urls import require_secure_url
from ._base import Provider, coerce_secret, require_policy, require_text
from ._parse import (
    error_for_status,
    error_in_body,
    json_object,
    parse_expires_in,
    standard_token,
)

__all__ = ["ClientCredentials"]

AuthMethod = Literal["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True, eq=False, kw_only=True)
class ClientCredentials(Provider):
    """A generic OAuth 2.0 client-credentials token endpoint (RFC 6749 §4.4).

    Args:
        token_url: The token endpoint; ``https`` unless it is a loopback host.
        client_id: The client identifier.
        client_secret: The client secret (a ``str`` is wrapped in :class:`~tokenpool.Secret`).
        auth_method: ``"client_secret_basic"`` sends the credentials in an HTTP
            Basic header, each form-urlencoded first as RFC 6749 §2.3.1 says;
            ``"client_secret_post"`` sends them in the form body.
        scope: Space-separated scopes to request, if any.
        extra_params: More form fields (``audience``, ``resource``…).
        default_expires_in: Lifetime to assume when a response has no
            ``expires_in``.  ``None`` (the default) treats such a response as
            invalid: RFC 6749 leaves the lifetime to documentation, and a
            guessed lifetime is how 401s happen.
        headers: Extra headers on the token request.
        extra_api_headers: Extra headers on every API call.
        refresh: When to renew and how to back off.
    """

    kind = "client_credentials"

    token_url: httpx.URL | str
    client_id: str
    client_secret: Secret | str
    auth_method: AuthMethod = "client_secret_basic"
    scope: str | None = None
    extra_params: Mapping[str, str] = field(default_factory=dict)
    default_expires_in: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    extra_api_headers: Mapping[str, str] = field(default_factory=dict)
    refresh: RefreshPolicy = field(default_factory=RefreshPolicy)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "token_url", require_secure_url(self.token_url, what="ClientCredentials.token_url")
        )
        require_text(self, "client_id")
        coerce_secret(self, "client_secret")
        if self.auth_method not in ("client_secret_basic", "client_secret_post"):
            raise ConfigurationError(
                f"ClientCredentials.auth_method must be 'client_secret_basic' or 'client_secret_post', "
                f"got {self.auth_method!r}"
            )
        if self.default_expires_in is not None:
            object.__setattr__(
                self, "default_expires_in", parse_expires_in(self.default_expires_in, default=None)
            )
        reserved = {"grant_type", "client_id", "client_secret", "scope"} & set(self.extra_params)
        if reserved:
            raise ConfigurationError(f"ClientCredentials.extra_params must not set {sorted(reserved)}")
        object.__setattr__(self, "extra_params", dict(self.extra_params))
        object.__setattr__(self, "headers", dict(self.headers))
        object.__setattr__(self, "extra_api_headers", dict(self.extra_api_headers))
        require_policy(self)

    def build_request(self) -> httpx.Request:
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        form.update(self.extra_params)
        headers = {"Accept": "application/json", **self.headers}
        secret = as_secret(self.client_secret).reveal()
        if self.auth_method == "client_secret_basic":
            quote = urllib.parse.quote_plus
            pair = f"{quote(self.client_id)}:{quote(secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = secret
        return httpx.Request("POST", self.token_url, data=form, headers=headers)

    def _parse(self, status_code: int, headers: Mapping[str, str], body: bytes) -> TokenResponse:
        host = httpx.URL(self.token_url).host
        hint = f"check client_id/client_secret for {host} and auth_method={self.auth_method!r}"
        if status_code != 200:
            raise error_for_status(status_code, headers, body, credentials_hint=hint, secrets=self._secrets())
        data = json_object(body, status_code=status_code)
        error = error_in_body(data, status_code=status_code, credentials_hint=hint, secrets=self._secrets())
        if error is not None:
            raise error
        return standard_token(data, default_expires_in=self.default_expires_in)

    def api_headers(self) -> Mapping[str, str]:
        return self.extra_api_headers
