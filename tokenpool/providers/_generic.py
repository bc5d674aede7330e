"""RFC 6749 §4.4 client credentials, for any standards-following token endpoint."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx

from .._exceptions import ConfigurationError
from .._secret import Secret, as_secret
from .._timing import RefreshPolicy
from .._urls import require_secure_url
from ._base import DeclarativeProvider
from ._settings import (
    coerce_secret,
    require_headers,
    require_lifetime,
    require_optional_text,
    require_text,
    require_text_mapping,
)
from ._wire import basic_authorization

__all__ = ["ClientCredentials"]

AuthMethod = Literal["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True, eq=False, kw_only=True)
class ClientCredentials(DeclarativeProvider):
    """A generic OAuth 2.0 client-credentials token endpoint (RFC 6749 §4.4).

    Args:
        token_url: The token endpoint; ``https`` unless it is a loopback host.
        client_id: The client identifier.
        client_secret: The client secret (a ``str`` is wrapped in :class:`~tokenpool.Secret`).
        auth_method: ``"client_secret_basic"`` sends the credentials in an HTTP
            Basic header, each form-urlencoded first as RFC 6749 §2.3.1 says;
            ``"client_secret_post"`` sends them in the form body.
        scope: Space-separated scopes to request, if any.
        extra_params: More form fields (``audience``, ``resource``…), ``str``
            to ``str``.
        default_expires_in: Lifetime in seconds to assume when a response has
            no ``expires_in``: a positive finite number (a numeric string is
            accepted too) of at most 366 days.  ``None`` (the default) treats
            such a response as invalid: RFC 6749 leaves the lifetime to
            documentation, and a guessed lifetime is how 401s happen.
        headers: Extra headers on the token request, ``str`` to ``str``; they
            replace the adapter's ``Accept``.  Not ``Authorization`` with
            ``client_secret_basic``, nor the framing headers httpx manages
            (``Host``, ``Content-Length``, ``Transfer-Encoding``…).
        extra_api_headers: Extra headers on every API call, ``str`` to
            ``str``; not ``Authorization`` (the bearer token) nor a framing
            header.
        refresh: When to renew and how to back off.

    Every setting is checked here, so :meth:`build_request` cannot fail on a
    provider that was built.
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

    def _check_settings(self) -> None:
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
        require_optional_text(self, "scope")
        require_lifetime(self, "default_expires_in")
        require_text_mapping(self, "extra_params")
        reserved = {"grant_type", "client_id", "client_secret", "scope"} & set(self.extra_params)
        if reserved:
            raise ConfigurationError(f"ClientCredentials.extra_params must not set {sorted(reserved)}")
        basic = self.auth_method == "client_secret_basic"
        require_headers(self, "headers", reserved=["Authorization"] if basic else [])
        require_headers(self, "extra_api_headers", reserved=["Authorization"])

    def build_request(self) -> httpx.Request:
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        form.update(self.extra_params)
        # httpx.Headers.update replaces case-insensitively: a user's "accept" replaces ours.
        headers = httpx.Headers({"Accept": "application/json"})
        headers.update(self.headers)
        authorization = self._basic_authorization()
        if authorization is not None:
            headers["Authorization"] = authorization
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = as_secret(self.client_secret).reveal()
        return httpx.Request("POST", self.token_url, data=form, headers=headers)

    def _basic_authorization(self) -> str | None:
        """RFC 6749 §2.3.1: each credential form-urlencoded, then HTTP Basic."""
        if self.auth_method != "client_secret_basic":
            return None
        quote = urllib.parse.quote_plus
        return basic_authorization(quote(self.client_id), quote(as_secret(self.client_secret).reveal()))

    def credentials_hint(self) -> str:
        host = httpx.URL(self.token_url).host
        return f"check client_id/client_secret for {host} and auth_method={self.auth_method!r}"

    def api_headers(self) -> Mapping[str, str]:
        return self.extra_api_headers
