"""A redis-py credential provider that keeps the password a :class:`~tokenpool.Secret` until AUTH."""

from __future__ import annotations

from typing import Any

from redis.credentials import CredentialProvider

from .._secret import Secret

__all__ = ["secret_credentials"]


class _SecretCredentials(CredentialProvider):
    """Hands redis-py the ACL user and password only when a connection authenticates.

    redis-py would otherwise keep the plain password in every connection's
    settings for the life of the process.
    """

    __slots__ = ("_password", "_username")

    def __init__(self, username: str | None, password: Secret | None) -> None:
        self._username = username
        self._password = password

    def __repr__(self) -> str:
        return f"<SecretCredentials username={self._username!r} password={'***' if self._password else None}>"

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        password = "" if self._password is None else self._password.reveal()
        if self._username:
            return (self._username, password)
        return (password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


def secret_credentials(username: str | None, password: Secret | None) -> Any:
    """The credential provider for a client's connection pool."""
    return _SecretCredentials(username, password)
