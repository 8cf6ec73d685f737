"""Keep credentials out of everything the engine records: error strings, run.log, manifests,
the `label_model` column.

A backend registers each secret it holds (`register_secret`: an API key read from
`api_key_env`, the user:password of a `base_url`); `redact` replaces those anywhere in a text
and also masks the shapes a secret travels in (an ``Authorization: Bearer ...`` header a
server echoes back, ``scheme://user:pw@host`` in a URL), so a key nobody registered is still
hidden when it comes back in one of those shapes.
"""

from __future__ import annotations

import base64
import re
import threading
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
_SECRETS: set[str] = set()
_LOCK = threading.Lock()
# an Authorization header value a server echoes in an error body: scheme, then its token
# (case-sensitive as HTTP writes them, so prose like "basic amenities" is left alone)
_AUTH_TOKEN = re.compile(r"\b([Bb]earer|Basic)(\s+)([A-Za-z0-9._~+/=-]{6,})")
# user:password@ (or user@) after a URL scheme
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"']+@")
# secrets shorter than this are not replaced verbatim: they would mask ordinary words
_MIN_SECRET = 4


def register_secret(value: str | None) -> None:
    """Remember a secret so `redact` masks it wherever it shows up."""
    if value and len(value) >= _MIN_SECRET:
        with _LOCK:
            _SECRETS.add(value)


def register_url_credentials(url: str) -> None:
    """Register the user:password of `url` (raw, percent-decoded, and as Basic auth)."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return
    user, password = parts.username or "", parts.password or ""
    for pair in {f"{user}:{password}", f"{unquote(user)}:{unquote(password)}"}:
        register_secret(pair)
        register_secret(base64.b64encode(pair.encode("utf-8")).decode("ascii"))
    register_secret(password)
    register_secret(unquote(password))


def redact(text: str | None) -> str | None:
    """`text` with every registered secret, auth token and URL credential masked."""
    if not text:
        return text
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:  # longest first: a password inside a user:password pair
        if secret in text:
            text = text.replace(secret, MASK)
    text = _AUTH_TOKEN.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)


def redact_url(url: str) -> str:
    """`url` with its user:password replaced by ***."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))


def redact_value(value: Any) -> Any:
    """A JSON-able value (a spec section for a manifest) with URL credentials masked in every
    string. Only the URL shape is masked, not registered secrets, so a stage fingerprint does
    not depend on which backends were opened before it was computed."""
    if isinstance(value, str):
        return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value
