"""Bearer tokens for the finance API.

``GPUMETER_API_TOKENS`` holds ``token=role[:subject]`` entries separated by commas, e.g.
``s3cr3t-finance=finance,s3cr3t-asr=team:speech/asr,s3cr3t-nw=partner:northwind-cloud``.
Roles: ``finance`` (subject optional), ``team:<cost centre>``, ``partner:<id>``.

Only the SHA-256 digest of each token is kept in memory; a presented token is hashed and
compared against every known digest with :func:`hmac.compare_digest` (no early exit). Errors
in the setting name the entry by its position and never echo what it holds.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from pydantic import SecretStr

from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.settings import SettingsError

ROLES = ("finance", "team", "partner")
FINANCE = "finance"
_EXPECTED = "expected token=role[:subject] with role finance, team:<cost centre> or partner:<id>"


class TokenConfigError(SettingsError, ValueError):
    """``api_tokens`` is malformed. The message never contains a token."""


@dataclass(frozen=True, slots=True)
class Principal:
    role: str
    subject: str = ""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(spec: SecretStr | str) -> dict[bytes, Principal]:
    """``token=role[:subject],...`` -> SHA-256 digest of the token -> principal.

    The token is everything before the last ``=`` (so base64 padding survives); empty entries
    (a trailing comma) are skipped."""
    text = spec.get_secret_value() if isinstance(spec, SecretStr) else spec
    out: dict[bytes, Principal] = {}
    for n, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        token, sep, grant = entry.rpartition("=")
        token, grant = token.strip(), grant.strip()
        if not sep or not token or not grant:
            raise TokenConfigError(f"api_tokens entry {n}: {_EXPECTED}")
        if any(ch.isspace() for ch in token):
            raise TokenConfigError(f"api_tokens entry {n}: the token contains whitespace")
        role, _, subject = grant.partition(":")
        role, subject = role.strip(), subject.strip()
        if role not in ROLES:
            raise TokenConfigError(f"api_tokens entry {n}: unknown role; {_EXPECTED}")
        if role != FINANCE and not subject:
            raise TokenConfigError(f"api_tokens entry {n}: role {role} needs a subject")
        digest = _digest(token)
        if digest in out:
            raise TokenConfigError(f"api_tokens entry {n}: the same token appears twice")
        out[digest] = Principal(role, subject)
    return out


class TokenAuth:
    def __init__(self, tokens: dict[bytes, Principal]) -> None:
        self._tokens = list(tokens.items())

    @classmethod
    def from_setting(cls, spec: SecretStr | str) -> TokenAuth:
        return cls(parse_tokens(spec))

    def __len__(self) -> int:
        return len(self._tokens)

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal the token belongs to, or None. Takes the same time whichever entry
        (if any) matches."""
        if not token:
            return None
        presented = _digest(token)
        found: Principal | None = None
        for digest, principal in self._tokens:
            if hmac.compare_digest(digest, presented):
                found = principal
        return found

    def require(self, token: str | None, roles: tuple[str, ...], refusal: str) -> Principal:
        """The principal of a bearer token whose role is one of ``roles``; otherwise
        ``billing.unauthorized`` (no or an unknown token: 401) or ``billing.forbidden`` with
        ``refusal`` (another role: 403)."""
        principal = self.authenticate(token)
        if principal is None:
            raise BillingError(
                BillingErrorCode.UNAUTHORIZED,
                "missing or unknown bearer token (Authorization: Bearer <token>)",
            )
        if principal.role not in roles:
            raise BillingError(BillingErrorCode.FORBIDDEN, refusal)
        return principal

    def grants(self, principal: Principal) -> bool:
        """Whether some configured token still grants ``principal`` (a dashboard session is
        honoured only while one does)."""
        return any(p == principal for _, p in self._tokens)
