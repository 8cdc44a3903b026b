#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local stack's token issuer: a key pair of its own, its public key set, and tokens."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_local_issuer
author: cruddur-ops contributors (@cruddur-ops)
short_description: The local stack's access-token issuer (the stand-in for a Cognito user pool)
description:
  - The local stack has no Cognito user pool, so it gets an issuer of its own, and the API checks
    its tokens with the very code that checks a pool's.
  - The issuer's RSA private key is generated once into I(key_path) (mode 0600, its directory
    0700) and never returned. The module returns the issuer's name, its app client id and its
    public key set (JWKS), which the API reads from a file.
  - With I(subject), it also mints an RS256 access token for that user (the claims a Cognito
    access token has - C(iss), C(sub), C(client_id), C(token_use=access), C(iat), C(exp) - and
    the key's id as C(kid)).
  - Changed only when the key is created. In check mode nothing is written; while the key does
    not exist yet, the key set returned is that of a throwaway key, and no token is minted.
options:
  key_path:
    description: The private key's file (PEM). Created when missing.
    type: path
    required: true
  subject:
    description: The user's identity (C(users.cognito_user_id)) to mint a token for.
    type: str
  lifetime:
    description: Seconds the minted token is valid.
    type: int
    default: 3600
requirements: [PyJWT, cryptography]
"""

EXAMPLES = r"""
- name: The local issuer's key set, for the API
  cruddur.ops.cruddur_local_issuer:
    key_path: "{{ playbook_dir }}/../.secrets/local/token-issuer.pem"
  register: issuer
  delegate_to: localhost

- name: A token for one user
  cruddur.ops.cruddur_local_issuer:
    key_path: "{{ playbook_dir }}/../.secrets/local/token-issuer.pem"
    subject: "{{ user_identity }}"
  register: minted
"""

RETURN = r"""
issuer:
  description: The tokens' C(iss).
  type: str
  returned: always
  sample: urn:cruddur:local-issuer
client_id:
  description: The tokens' C(client_id), the one app client of the local stack.
  type: str
  returned: always
  sample: cruddur-local
kid:
  description: The key's id (its RFC 7638 thumbprint).
  type: str
  returned: always
jwks:
  description: The public key set, as the API reads it.
  type: dict
  returned: always
token:
  description: An access token for I(subject).
  type: str
  returned: when I(subject) is given, unless the key would first be created in check mode
"""

import base64
import hashlib
import json
import os
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
except ImportError:
    IMPORT_ERROR = traceback.format_exc()
else:
    IMPORT_ERROR = None

ISSUER = "urn:cruddur:local-issuer"
CLIENT_ID = "cruddur-local"


def _b64(number):
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def public_jwk(private_key):
    numbers = private_key.public_key().public_numbers()
    jwk = {"e": _b64(numbers.e), "kty": "RSA", "n": _b64(numbers.n)}
    # RFC 7638: the SHA-256 of the required members in lexicographic order, no whitespace.
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).decode("ascii").rstrip("=")
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def load_or_create(path, check_mode):
    """(private key, created); in check mode a key that would be created is made but not kept."""
    if os.path.exists(path):
        with open(path, "rb") as handle:
            return serialization.load_pem_private_key(handle.read(), password=None), False
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if check_mode:
        return key, True
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        # Complete or absent: never a half-written key.
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return key, True


def mint(private_key, jwk, subject, lifetime, now=None):
    now = int(time.time() if now is None else now)
    claims = {"iss": ISSUER, "sub": subject, "client_id": CLIENT_ID, "token_use": "access",
              "scope": "aws.cognito.signin.user.admin", "iat": now, "auth_time": now, "exp": now + lifetime,
              "jti": base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")}
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": jwk["kid"]})


def main():
    module = AnsibleModule(
        argument_spec={
            "key_path": {"type": "path", "required": True, "no_log": False},
            "subject": {"type": "str"},
            "lifetime": {"type": "int", "default": 3600},
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("PyJWT and cryptography"), exception=IMPORT_ERROR)
    params = module.params
    if params["lifetime"] < 1:
        module.fail_json(msg=f"lifetime must be at least 1 second, not {params['lifetime']}")
    if params["subject"] is not None and not params["subject"].strip():
        module.fail_json(msg="subject is blank: give the user's identity (users.cognito_user_id)")
    try:
        key, created = load_or_create(params["key_path"], module.check_mode)
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"the issuer's key {params['key_path']} cannot be read or made: {exc}")
    result = {"changed": created, "issuer": ISSUER, "client_id": CLIENT_ID}
    jwk = public_jwk(key)
    result.update(kid=jwk["kid"], jwks={"keys": [jwk]})
    if params["subject"] is not None and not (created and module.check_mode):
        result["token"] = mint(key, jwk, params["subject"], params["lifetime"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
