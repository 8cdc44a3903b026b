"""A token issuer for the tests: the local stack's issuer (cruddur.ops.cruddur_local_issuer), a
key pair of its own in a temporary directory, and tokens with any claims a test needs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from ansible_collections.cruddur.ops.plugins.modules import cruddur_local_issuer as local_issuer

ISSUER = local_issuer.ISSUER
CLIENT_ID = local_issuer.CLIENT_ID


class Issuer:
    def __init__(self, directory: Path):
        self.key, _ = local_issuer.load_or_create(str(directory / "issuer.pem"), check_mode=False)
        self.jwk = local_issuer.public_jwk(self.key)
        self.jwks_path = directory / "jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [self.jwk]}))

    def config(self) -> dict:
        """The API settings that trust this issuer."""
        return {"AUTH_ISSUER": ISSUER, "AUTH_JWKS": str(self.jwks_path), "AUTH_CLIENT_IDS": [CLIENT_ID]}

    def claims(self, sub: str, **overrides) -> dict:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": sub, "client_id": CLIENT_ID, "token_use": "access",
                  "iat": now, "auth_time": now, "exp": now + 600}
        claims.update(overrides)
        return {key: value for key, value in claims.items() if value is not ...}

    def token(self, sub: str, *, key=None, headers: dict | None = None, **overrides) -> str:
        """An RS256 token for `sub`, signed with this issuer's key (or `key`)."""
        return jwt.encode(self.claims(sub, **overrides), key or self.key, algorithm="RS256",
                          headers={"kid": self.jwk["kid"], **(headers or {})})

    def bearer(self, sub: str, **overrides) -> dict:
        return {"Authorization": f"Bearer {self.token(sub, **overrides)}"}


def other_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
