"""Mapping observed strings into the event contract's character sets (pure).

Tokens (``cluster``, ``node``, ``gpu_uuid``, ...) accept ``[A-Za-z0-9][A-Za-z0-9._:/@+=-]*``,
1-128 characters. A collector observes whatever a host, an exporter or Slurm reports, so it
maps each value with :func:`to_token`, an injective escape: a value that already is a token
and holds no ``=`` is kept as it is; otherwise every character outside the set (and ``=``
itself) becomes ``=XX`` per UTF-8 byte (``gpu node 1`` -> ``gpu=20node=201``); a first
character that is not a letter or digit becomes ``0=`` and its escape (``.x`` -> ``0==2Ex``:
``==`` appears in no other mapping). Two different observed values never map to the same
token, so two hosts never merge. A mapped value longer than 128 characters keeps its first
111 characters and ``+`` and 16 hex digits of the SHA-256 of the observed value. An empty
value is refused (:class:`TokenError`).

Text fields (``project_id``, ``job_id``) accept any Unicode but control characters, up to
128 code points: :func:`to_text` replaces control characters by U+FFFD and cuts the value.
"""

from __future__ import annotations

import hashlib
import re

_TOKEN_CHAR = re.compile(r"[A-Za-z0-9._:/@+-]")
_ALNUM = re.compile(r"[A-Za-z0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_TOKEN = 128


class TokenError(ValueError):
    """An observed value that cannot be mapped to a token (it is empty)."""


def _escape(ch: str) -> str:
    return "".join(f"={b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


def to_token(value: str, what: str = "value", max_length: int = MAX_TOKEN) -> str:
    """``value`` as a token (see the module's docstring); :class:`TokenError` if empty."""
    if not value:
        raise TokenError(f"{what} is empty")
    out = []
    for i, ch in enumerate(value):
        if i == 0:
            out.append(ch if _ALNUM.fullmatch(ch) else "0=" + _escape(ch))
        else:
            out.append(ch if _TOKEN_CHAR.fullmatch(ch) else _escape(ch))
    token = "".join(out)
    if len(token) > max_length:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        token = f"{token[: max_length - 17]}+{digest}"
    return token


def to_text(value: str, max_length: int = 128) -> str:
    """``value`` without control characters (each replaced by U+FFFD), at most
    ``max_length`` code points; lone surrogates become U+FFFD too."""
    clean = value.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub("\ufffd", clean)[:max_length]
