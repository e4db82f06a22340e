"""PIN hashing: the bank stores only salted scrypt hashes and compares in constant time.

A stored hash reads ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (salt and hash in
url-safe base64), so the cost can rise later without breaking old hashes. The
default cost makes one verify take a few tens of milliseconds; tests may pass a
smaller ``n``. PINs never appear in an error message, a log or a repr.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets

__all__ = [
    "CHEAP_CHECK_MEMORY",
    "DEFAULT_SCRYPT_N",
    "check_pin_format",
    "hash_pin",
    "is_pin_hash",
    "pin_check_is_cheap",
    "verify_pin",
]

DEFAULT_SCRYPT_N = 2**14
"""Default scrypt cost: about 30 ms and 16 MiB per hash on a current CPU."""

_R, _P, _DKLEN, _SALT_BYTES = 8, 1, 32, 16
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16  # refuse stored parameters that would exhaust memory
_PIN = re.compile(r"[0-9]{4,12}")
_B64 = r"([A-Za-z0-9_=-]{4,88})"
_HASH = re.compile(rf"scrypt\$(\d{{1,8}})\$(\d{{1,3}})\$(\d{{1,3}})\${_B64}\${_B64}")


def check_pin_format(pin: object) -> str:
    """``pin`` itself if it is a string of 4 to 12 ASCII digits; else ValueError."""
    if not isinstance(pin, str) or not _PIN.fullmatch(pin):
        raise ValueError("a PIN must be a string of 4 to 12 digits")
    return pin


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        pin.encode("ascii"), salt=salt, n=n, r=r, p=p, maxmem=256 * r * n + 2**20, dklen=_DKLEN
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def hash_pin(pin: str, *, n: int = DEFAULT_SCRYPT_N) -> str:
    """A salted scrypt hash of ``pin`` with its parameters, for storage."""
    check_pin_format(pin)
    if not isinstance(n, int) or n < 2 or n > _MAX_N or n & (n - 1):
        raise ValueError(f"scrypt n must be a power of two between 2 and {_MAX_N}")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(pin, salt, n, _R, _P)
    return f"scrypt${n}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    return _parse_text(stored) if isinstance(stored, str) else None


@functools.lru_cache(maxsize=4096)
def _parse_text(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    """``_parse`` of a str; kept for the cards signed in most (each sign-in parses twice)."""
    match = _HASH.fullmatch(stored)
    if match is None:
        return None
    n, r, p = (int(match[i]) for i in (1, 2, 3))
    if n < 2 or n > _MAX_N or n & (n - 1) or not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P:
        return None
    try:
        salt = base64.urlsafe_b64decode(match[4])
        digest = base64.urlsafe_b64decode(match[5])
    except ValueError:
        return None
    return n, r, p, salt, digest


CHEAP_CHECK_MEMORY = 64 * 1024
"""A hash whose scrypt check needs at most this much memory takes tens of microseconds."""


def pin_check_is_cheap(stored: str) -> bool:
    """Whether checking a PIN against ``stored`` is cheap (scrypt over <= CHEAP_CHECK_MEMORY).

    The default cost is not (16 MiB, tens of milliseconds); the swarm's synthetic
    accounts are. A malformed hash counts as cheap: its check fails at once.
    """
    parsed = _parse(stored)
    return parsed is None or 128 * parsed[0] * parsed[1] * parsed[2] <= CHEAP_CHECK_MEMORY


def is_pin_hash(stored: object) -> bool:
    """Whether ``stored`` has the shape :func:`hash_pin` produces (it is not checked)."""
    return isinstance(stored, str) and _parse(stored) is not None


def verify_pin(pin: str, stored: str) -> bool:
    """Whether ``pin`` matches the ``stored`` hash; compared in constant time.

    Raises ValueError if ``pin`` is not 4 to 12 digits or ``stored`` is not a hash.
    """
    check_pin_format(pin)
    parsed = _parse(stored)
    if parsed is None:
        raise ValueError("the stored value is not a PIN hash made by hash_pin")
    n, r, p, salt, digest = parsed
    return hmac.compare_digest(_scrypt(pin, salt, n, r, p), digest)
