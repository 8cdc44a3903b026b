"""Who is writing: the Cognito access token the frontend sends as `Authorization: Bearer ...`.

One code path for every inventory. A token is accepted only when
- its header names RS256 and a key of the issuer's key set (JWKS); nothing else is tried, so
  `alg: none` and HS256 signed with the public key are refused before any key is touched;
- its signature checks against that key (PyJWT);
- `iss` is the configured issuer, `token_use` is `access`, `client_id` is one of the configured
  app clients, and it has not expired (`AUTH_LEEWAY` seconds of clock skew allowed).
The token's `sub` is then the user's `users.cognito_user_id`; the write's SQL finds the author
by it, never by anything in the body.

The key set is read once (an http(s) URL: the user pool's JWKS; a file; or the key set itself, as
the local issuer's comes in the configuration file) and kept. A token naming a key the set does not have makes one new read, at most every
`REFRESH_INTERVAL` seconds, so a rotated pool key is picked up and a flood of made-up key ids
does not turn into a flood of requests to the pool.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass

import jwt
from flask import request

ALGORITHM = "RS256"
REFRESH_INTERVAL = 60.0
FETCH_TIMEOUT = 5.0
RETRY_AFTER_FAILURE = 5.0
REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub", "token_use", "client_id"]


class Unauthorized(Exception):
    """No usable token: 401 with WWW-Authenticate: Bearer and the code."""

    def __init__(self, code: str, description: str):
        super().__init__(description)
        self.code = code
        self.description = description


class KeySetUnavailable(Exception):
    """The issuer's key set cannot be read: the API cannot judge any token (503)."""


@dataclass(frozen=True)
class Identity:
    sub: str
    client_id: str


class KeySet:
    """The issuer's public keys by key id, read from `source` (URL or file path) when first needed."""

    def __init__(self, source: str | dict, refresh_interval: float = REFRESH_INTERVAL):
        self.source = source
        self.refresh_interval = refresh_interval
        self.keys: dict[str, jwt.PyJWK] = {}
        self.reads = 0
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def _read(self) -> dict:
        if isinstance(self.source, dict):
            return self.source
        if self.source.startswith(("http://", "https://")):
            with urllib.request.urlopen(self.source, timeout=FETCH_TIMEOUT) as response:  # noqa: S310 (http(s) only)
                return json.load(response)
        with open(self.source, encoding="utf-8") as handle:
            return json.load(handle)

    def _refresh(self) -> None:
        self._read_at = time.monotonic()
        self.reads += 1
        try:
            key_set = jwt.PyJWKSet.from_dict(self._read())
        except (OSError, ValueError, jwt.PyJWKSetError) as exc:
            # Tried again after a few seconds, not after the full interval.
            self._read_at -= self.refresh_interval - RETRY_AFTER_FAILURE
            where = self.source if isinstance(self.source, str) else "configured"
            raise KeySetUnavailable(f"the token issuer's key set ({where}) cannot be read: "
                                    f"{type(exc).__name__}") from None
        self.keys = {key.key_id: key for key in key_set.keys if key.key_id and key.key_type == "RSA"}

    def get(self, kid: str) -> jwt.PyJWK | None:
        key = self.keys.get(kid)
        if key is not None:
            return key
        with self._lock:
            key = self.keys.get(kid)
            if key is None and time.monotonic() - self._read_at >= self.refresh_interval:
                self._refresh()
                key = self.keys.get(kid)
        return key


class Verifier:
    """Checks access tokens of one issuer for a set of app clients."""

    def __init__(self, issuer: str, jwks: str, client_ids, leeway: float = 30):
        if not issuer:
            raise RuntimeError("AUTH_ISSUER is not configured: the API cannot tell who writes")
        if not jwks:
            raise RuntimeError("AUTH_JWKS is not configured: the issuer's key set (a URL or a file)")
        if isinstance(client_ids, str):
            client_ids = [item.strip() for item in client_ids.split(",")]
        self.client_ids = frozenset(item for item in client_ids or () if item)
        if not self.client_ids:
            raise RuntimeError("AUTH_CLIENT_IDS is empty: no app client's tokens would be accepted")
        self.issuer = issuer
        self.leeway = float(leeway)
        self.key_set = KeySet(jwks)

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthorized("token_malformed", "the bearer token is not a JWT") from None
        if header.get("alg") != ALGORITHM:
            raise Unauthorized("token_invalid", f"only {ALGORITHM} tokens are accepted")
        kid = header.get("kid")
        key = self.key_set.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthorized("token_invalid", "the token is not signed by a key of the issuer")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[ALGORITHM], issuer=self.issuer, leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS, "verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token_expired", "the token has expired") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("token_invalid", "the token is from another issuer") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("token_invalid", "the token's signature or claims do not check") from None
        if claims["token_use"] != "access":
            raise Unauthorized("token_not_access", "send the access token, not the id token")
        if claims["client_id"] not in self.client_ids:
            raise Unauthorized("token_invalid", "the token is for another app client")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise Unauthorized("token_invalid", "the token names no user")
        return Identity(sub=claims["sub"], client_id=claims["client_id"])


def bearer_token() -> str:
    """The token of the request's `Authorization: Bearer` header, or Unauthorized."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header:
        raise Unauthorized("token_missing", "sign in: this needs an access token")
    if scheme.lower() != "bearer" or not token or token in ("null", "undefined"):
        raise Unauthorized("token_missing", "sign in: this needs an access token")
    return token
