"""Reviewers' credentials and request forgery protection: pure functions over the standard
library.

Passwords are stored as scrypt hashes (``scrypt$n$r$p$salt$hash``, base64 parts), made by
``qexplorer review hash-password`` and given to the service in settings; the service never
sees or stores a password otherwise. A sign-in for an unknown name costs the same scrypt call
as a real one. Every form carries the session's CSRF token, compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping

#: scrypt cost: 2^14 rounds, block size 8, no parallelism (about 50 ms here, 16 MiB).
N, R, P = 2**14, 8, 1
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The stored form of a password (a fresh random salt unless given)."""
    if not password:
        raise ValueError("a password cannot be empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return "$".join(("scrypt", str(N), str(R), str(P), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()))


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a :func:`hash_password` result (False for a malformed
    one)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        found = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                               r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, expected)


def authenticate(users: Mapping[str, str], name: str, password: str) -> bool:
    """True when ``name`` is a reviewer and ``password`` is theirs; as slow for an unknown
    name as for a known one."""
    stored = users.get(name)
    matched = verify_password(password, stored if stored is not None else _DUMMY)
    return stored is not None and matched


def new_token() -> str:
    """A fresh CSRF token for a session."""
    return secrets.token_urlsafe(32)


def token_matches(expected: str | None, submitted: str | None) -> bool:
    """True when a submitted form token is the session's (constant time)."""
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())
