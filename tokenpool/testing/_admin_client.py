"""The emulator's admin API as methods: the client side of ``_admin.py``.

Each method of :class:`AdminClient` is one ``/_admin/`` request and its JSON
answer; :class:`EmulatorProcess` inherits them and supplies the transport
(:meth:`AdminClient._admin`, over its plain HTTP listener).
"""

from __future__ import annotations

from typing import Any

from ._constants import PROVIDERS

__all__ = ["AdminClient", "check_provider"]


class AdminClient:
    """The admin API calls of a running emulator (a base of :class:`EmulatorProcess`)."""

    def _admin(self, method: str, action: str, **kwargs: Any) -> Any:
        """Send one admin request (``**kwargs`` go to ``httpx``); returns its JSON answer.

        Raises:
            EmulatorError: The emulator refused the call or is not running.
        """
        raise NotImplementedError

    def credentials(self, provider: str) -> tuple[str, str]:
        """``(client_id, client_secret)`` of the provider's default client, as they are now."""
        info = self.client_info(provider)
        return str(info["client_id"]), str(info["client_secret"])

    def client_info(self, provider: str) -> dict[str, Any]:
        """The provider's default client as the server sees it now: credentials plus
        ``business_uuids`` (Zertiban), ``company`` (Navro), ``scope``, ``audience`` (Pay-me)."""
        result: dict[str, Any] = self._admin(
            "GET", "credentials", params={"provider": check_provider(provider)}
        )
        return result

    def stats(self, *, events: bool = True, since: float | None = None) -> dict[str, Any]:
        """Exact counters per provider (``["providers"][name]``) and the event timeline."""
        params: dict[str, str] = {"events": "1" if events else "0"}
        if since is not None:
            params["since"] = repr(since)
        result: dict[str, Any] = self._admin("GET", "stats", params=params)
        return result

    def reset(self) -> None:
        """Clear tokens, faults, counters and events; undo rotations, lifetimes, scale, revoke-on-issue."""
        self._admin("POST", "reset", json={})

    def fault(
        self,
        provider: str,
        *,
        latency: float | None = None,
        resource_latency: float | None = None,
        status: int | None = None,
        retry_after: float | str | None = None,
        malformed: str | None = None,
        drop: bool = False,
        duration: float | None = None,
        count: int | None = None,
    ) -> int:
        """Inject a fault into *provider*; returns its id.

        Args:
            provider: Which provider.
            latency: Seconds added before answering token requests.
            resource_latency: Seconds added before answering resource calls.
            status: The token endpoint answers this HTTP status instead.
            retry_after: ``Retry-After`` value sent with *status*.
            malformed: A broken 2xx answer: ``html``, ``not_json``, ``empty``,
                ``missing_access_token``, ``bad_expires_in``, ``zero_expires_in``,
                ``wrong_token_type`` or ``success_false``.
            drop: Start the answer and break the connection (a protocol error).
            duration: Seconds after which the fault lapses.
            count: Number of requests it applies to.
        """
        spec: dict[str, Any] = {"provider": check_provider(provider)}
        options = {
            "latency": latency,
            "resource_latency": resource_latency,
            "status": status,
            "retry_after": retry_after,
            "malformed": malformed,
            "duration": duration,
            "count": count,
        }
        spec.update({key: value for key, value in options.items() if value is not None})
        if drop:
            spec["drop"] = True
        return int(self._admin("POST", "faults", json=spec)["id"])

    def clear_faults(self, provider: str | None = None) -> int:
        """Remove the faults of *provider* (or of all); returns how many were removed."""
        body = {} if provider is None else {"provider": check_provider(provider)}
        return int(self._admin("POST", "clear-faults", json=body)["cleared"])

    def revoke_tokens(self, provider: str | None = None) -> int:
        """Revoke every token issued so far (by *provider*, or all); returns how many live tokens were hit."""
        body = {} if provider is None else {"provider": check_provider(provider)}
        return int(self._admin("POST", "revoke", json=body)["revoked"])

    def set_revoke_on_issue(self, provider: str, enabled: bool = True) -> None:
        """Switch *provider*'s revoke-on-issue mode on (the default) or off.

        While it is on, each token the provider issues to a client revokes that
        client's earlier tokens from this provider that are still live (their
        resource calls get 401 ``revoked``), as a token server keeping one live
        token per client does.  Other clients and providers are untouched; the
        provider's ``revoked_on_issue`` counter in :meth:`stats` counts the hits.
        :meth:`reset` switches it off.

        Args:
            provider: Which provider.
            enabled: On or off.

        Raises:
            ValueError: Unknown provider.
            TypeError: *enabled* is not a bool.
            EmulatorError: The emulator refused the call or is not running.
        """
        if not isinstance(enabled, bool):
            raise TypeError("enabled must be true or false")
        self._admin(
            "POST", "revoke-on-issue", json={"provider": check_provider(provider), "enabled": enabled}
        )

    def rotate_secret(self, provider: str) -> str:
        """Give the default client a new secret (the old one fails at once) and return it."""
        return str(
            self._admin("POST", "rotate-secret", json={"provider": check_provider(provider)})["client_secret"]
        )

    def set_lifetime(
        self, provider: str, seconds: float | None = None, *, expires_in: int | None = None
    ) -> int:
        """Set the lifetime of *provider*'s next tokens; returns the ``expires_in`` they will carry.

        Args:
            provider: Which provider.
            seconds: Unscaled lifetime, multiplied by the lifetime scale.
            expires_in: Exact ``expires_in``, not scaled.  With neither, the documented default.
        """
        body: dict[str, Any] = {"provider": check_provider(provider)}
        if seconds is not None:
            body["seconds"] = seconds
        if expires_in is not None:
            body["expires_in"] = expires_in
        return int(self._admin("POST", "lifetime", json=body)["expires_in"])

    def set_lifetime_scale(self, scale: float) -> float:
        """Change the lifetime scale for tokens issued from now on (``reset`` restores the start value)."""
        return float(self._admin("POST", "lifetime-scale", json={"scale": scale})["lifetime_scale"])


def check_provider(provider: str) -> str:
    """*provider* if it is one the emulator serves, else ValueError (before any request is sent)."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
    return provider
