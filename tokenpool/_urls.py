"""URL checks shared by providers and the auth flow."""

from __future__ import annotations

import functools
import ipaddress

import httpx

from ._exceptions import ConfigurationError

__all__ = ["is_loopback_host", "require_secure_url"]


@functools.lru_cache(maxsize=256)
def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``."""
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_secure_url(url: str | httpx.URL, *, what: str) -> httpx.URL:
    """Parse *url* and insist on ``https`` unless it points at loopback."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        # The text is not echoed: a malformed URL may hold embedded credentials.
        raise ConfigurationError(f"{what}: not a valid URL") from None
    if parsed.userinfo:
        raise ConfigurationError(f"{what}: credentials must not be embedded in the URL")
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise ConfigurationError(f"{what}: expected an absolute http(s) URL, got {str(parsed)!r}")
    if parsed.scheme == "http" and not is_loopback_host(parsed.host):
        raise ConfigurationError(
            f"{what}: {str(parsed)!r} uses plain http; https is required except for loopback hosts"
        )
    return parsed
