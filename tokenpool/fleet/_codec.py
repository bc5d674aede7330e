"""What the fleet store writes to Redis: key names and token values, and nothing else.

Pure functions, no I/O.

Keys
    Per provider, ``{prefix}:{<digest>}:token`` (and ``:lease``, ``:gen``,
    ``:chan``), where the digest is an HMAC-SHA256 over the provider's
    identity (kind, token URL, every non-secret setting but ``refresh``),
    keyed with the provider's secrets.  Someone who can list the keys learns
    how many clients there are, not which: mapping a key to a client needs
    its secret.  The braces are a Redis Cluster hash tag, so a provider's
    keys live in one slot and its Lua scripts may touch all of them.

Values
    Compact JSON: ``{"v": 1, "digest": …, "token": …, "expires_in": …,
    "token_type": …, "scope": …, "issued_at": …, "gen": …}``.  ``token`` is
    the access token itself, or ``{"kid", "nonce", "ct"}`` when encryption
    keys are configured (AES-256-GCM; the key digest is the associated data,
    so a value copied under another provider's key does not decrypt).
    ``digest`` is the SHA-256 of the access token, in clear so that the 401
    fence (a Lua script) can compare without the key.  ``issued_at`` and
    ``gen`` are appended by the publishing Lua script on the Redis server's
    clock.  Client secrets are never part of a value.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from .._secret import Secret, settings_of
from ..providers import ClientCertificate

if TYPE_CHECKING:
    from .._token import TokenResponse
    from ..providers import Provider

__all__ = [
    "FORMAT_VERSION",
    "Garbage",
    "Keys",
    "SharedToken",
    "decode_value",
    "encode_value_prefix",
    "keys_for",
    "token_digest",
]

#: The ``v`` field of every value this version writes; any other is refused (read as garbage).
FORMAT_VERSION = 1

#: Domain separation for the key digest: changing the derivation changes every key.
_KEY_CONTEXT = b"tokenpool-fleet-key-v1"

#: Fields that are not part of a provider's identity: how often to renew says nothing about
#: which client a token belongs to.  Private fields (``_forwarded_certificate``) are derived.
_NOT_IDENTITY = frozenset({"refresh"})

_NONCE_BYTES = 12


class Garbage(Exception):
    """A value in Redis that this version cannot use (the message never quotes it)."""


@dataclass(frozen=True, slots=True)
class Keys:
    """The Redis names of one provider's shared state."""

    digest: str
    token: str
    lease: str
    gen: str
    channel: str


@dataclass(frozen=True, slots=True)
class SharedToken:
    """A decoded shared token; times on the Redis server's clock."""

    access_token: str = dataclasses.field(repr=False)
    digest: str
    expires_in: float
    token_type: str
    scope: str | None
    issued_at: float
    generation: int


def token_digest(access_token: str) -> str:
    """SHA-256 of an access token, hex: what the fence compares."""
    return hashlib.sha256(access_token.encode("utf-8")).hexdigest()


def keys_for(provider: Provider, prefix: str) -> Keys:
    """The key names of *provider*'s shared token, lease, generation counter and channel."""
    secret_material, identity = _identity(provider)
    mac = hmac.new(secret_material, _KEY_CONTEXT + b"\0" + identity, hashlib.sha256)
    # 128 bits: far beyond any collision risk for a fleet's client count, and short keys.
    digest = mac.hexdigest()[:32]
    base = f"{prefix}:{{{digest}}}"
    return Keys(
        digest=digest,
        token=f"{base}:token",
        lease=f"{base}:lease",
        gen=f"{base}:gen",
        channel=f"{base}:chan",
    )


def _identity(provider: Provider) -> tuple[bytes, bytes]:
    """(the provider's secrets as HMAC key material, its non-secret identity as canonical bytes)."""
    secrets: list[bytes] = []
    fields: dict[str, Any] = {}
    for name, value in sorted(settings_of(provider).items()):
        if name in _NOT_IDENTITY or name.startswith("_"):
            continue
        if isinstance(value, Secret):
            secrets.append(_framed(name, value.reveal()))
            continue
        if isinstance(value, ClientCertificate):
            if isinstance(value.password, Secret):
                secrets.append(_framed(f"{name}.password", value.password.reveal()))
            fields[name] = {"cert_file": value.cert_file, "key_file": value.key_file}
            continue
        fields[name] = _plain(value)
    fields["__kind__"] = provider.kind
    fields["__token_url__"] = str(provider.token_url)
    identity = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    # A provider without any secret still gets a stable (if guessable) digest.
    return b"".join(secrets), identity


def _framed(name: str, text: str) -> bytes:
    """Length-prefixed, so that no two different secret sets concatenate to the same bytes."""
    data = f"{name}={text}".encode("utf-8", "surrogatepass")
    return len(data).to_bytes(4, "big") + data


def _plain(value: Any) -> Any:
    """A JSON-able, order-independent form of a setting."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, httpx.URL):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(str(v) for v in value)
    # Anything else by its text: stable for the value types adapters use (enums, paths).
    return str(value)


# -- values ------------------------------------------------------------------------------------


class Cipher:
    """AES-256-GCM with key ids: the first key encrypts, every key is tried to decrypt.

    Args:
        keys: Key id → 32-byte key, in order of preference.
    """

    __slots__ = ("_aeads", "_first")

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        # Imported here: cryptography is an optional dependency of the fleet tier.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aeads = {kid: AESGCM(bytes(key)) for kid, key in keys.items()}
        self._first = next(iter(keys))

    def __repr__(self) -> str:
        return f"<Cipher key_ids={list(self._aeads)}>"

    def encrypt(self, plaintext: str, associated: bytes) -> dict[str, str]:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aeads[self._first].encrypt(nonce, plaintext.encode("utf-8"), associated)
        return {"kid": self._first, "nonce": _b64(nonce), "ct": _b64(sealed)}

    def decrypt(self, box: Mapping[str, Any], associated: bytes) -> str:
        from cryptography.exceptions import InvalidTag

        kid, nonce, sealed = box.get("kid"), box.get("nonce"), box.get("ct")
        if not (isinstance(kid, str) and isinstance(nonce, str) and isinstance(sealed, str)):
            raise Garbage("the encrypted token is malformed")
        try:
            nonce_bytes, sealed_bytes = _unb64(nonce), _unb64(sealed)
        except (binascii.Error, ValueError):
            raise Garbage("the encrypted token is not base64") from None
        # The named key first, then the others: a key may have been re-labelled during rotation.
        order = [self._aeads[kid]] if kid in self._aeads else []
        order += [aead for name, aead in self._aeads.items() if name != kid]
        for aead in order:
            try:
                return aead.decrypt(nonce_bytes, sealed_bytes, associated).decode("utf-8")
            except (InvalidTag, ValueError, UnicodeDecodeError):
                continue
        raise Garbage("the token does not decrypt with any configured key")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def encode_value_prefix(response: TokenResponse, keys: Keys, cipher: Cipher | None) -> str:
    """The value's JSON object without its closing brace; the Lua script appends ``issued_at`` and ``gen``."""
    token: str | dict[str, str]
    if cipher is None:
        token = response.access_token
    else:
        token = cipher.encrypt(response.access_token, keys.digest.encode("ascii"))
    body = {
        "v": FORMAT_VERSION,
        "digest": token_digest(response.access_token),
        "token": token,
        "expires_in": float(response.expires_in),
        "token_type": response.token_type,
        "scope": response.scope,
    }
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text[:-1]


def decode_value(raw: bytes, keys: Keys, cipher: Cipher | None) -> SharedToken:
    """Decode a value read from *keys.token*.

    Raises:
        Garbage: not JSON, another format version, a missing or mistyped
            field, a plain token where encryption is configured (or the
            reverse), a token that does not decrypt, or one whose digest does
            not match.  Messages never quote the value.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Garbage("the value is not JSON") from None
    if not isinstance(data, dict):
        raise Garbage("the value is not a JSON object")
    version = data.get("v")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise Garbage("the value has another format version")
    digest = data.get("digest")
    token_type = data.get("token_type")
    scope = data.get("scope")
    generation = data.get("gen")
    if not isinstance(digest, str) or not isinstance(token_type, str) or not token_type:
        raise Garbage("the value lacks its digest or token type")
    if scope is not None and not isinstance(scope, str):
        raise Garbage("the value's scope is not text")
    if isinstance(generation, bool) or not isinstance(generation, int):
        raise Garbage("the value has no generation")
    expires_in = _number(data.get("expires_in"))
    issued_at = _number(data.get("issued_at"))
    if expires_in <= 0:
        raise Garbage("the value's lifetime is not positive")
    token = data.get("token")
    if cipher is None:
        if not isinstance(token, str):
            # Encrypted by someone with keys we do not have: unusable here.
            raise Garbage("the token is encrypted and no encryption keys are configured")
        access_token = token
    else:
        if not isinstance(token, dict):
            # A plain token where every writer should encrypt: refused, not trusted.
            raise Garbage("the token is not encrypted but encryption keys are configured")
        access_token = cipher.decrypt(token, keys.digest.encode("ascii"))
    if not access_token or not hmac.compare_digest(token_digest(access_token), digest):
        raise Garbage("the token does not match its digest")
    return SharedToken(
        access_token=access_token,
        digest=digest,
        expires_in=expires_in,
        token_type=token_type,
        scope=scope,
        issued_at=issued_at,
        generation=generation,
    )


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Garbage("the value has a field that is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise Garbage("the value has a field that is not a finite number")
    return number
