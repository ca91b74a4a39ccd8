"""E-mail addresses -> one canonical spelling (lower case, IDNA domain)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import idna

_MAX_INPUT = 512
_MAX_LOCAL = 64
_MAX_DOMAIN = 253
_MAX_ADDRESS = 254

# RFC 5322 dot-atom text; non-ASCII letters allowed too (RFC 6531 mailboxes exist).
_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Email:
    """An address as typed and its canonical form (None when it is not an address)."""

    raw: str
    canonical: str | None
    valid: bool


def _local_ok(local: str) -> bool:
    if not local or len(local) > _MAX_LOCAL:
        return False
    if local.isascii():
        # ASCII's only control (C) and separator (Z) characters, found without a category
        # lookup per character (a reindex reads an address for most patients).
        if not local.isprintable() or " " in local:
            return False
    elif any(unicodedata.category(ch)[0] in ("C", "Z") for ch in local):
        return False
    return all(part and _LOCAL_ATOM.match(part) for part in local.split("."))


def _ascii_domain(domain: str) -> str | None:
    """IDNA-encode the domain (UTS 46 mapping), falling back to Python's IDNA 2003 codec.

    The fallback keeps addresses that only the older, more lenient rules accept.
    """
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    try:
        return domain.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError):
        return None


def _domain_ok(domain: str) -> bool:
    if not domain or len(domain) > _MAX_DOMAIN:
        return False
    labels = domain.split(".")
    if len(labels) < 2:
        return False
    if not all(_LABEL.match(label) for label in labels):
        return False
    return len(labels[-1]) >= 2 and not labels[-1].isdigit()


def _invalid(raw: str) -> Email:
    return Email(raw=raw, canonical=None, valid=False)


def normalize_email(raw: str) -> Email:
    """Canonical address for matching: trimmed, lower-cased, domain in IDNA ASCII form.

    The local part is lower-cased too: strictly it is case-sensitive, but no clinic patient
    has two mailboxes differing only by case, and staff type addresses in any case.
    """
    if not isinstance(raw, str):
        return _invalid("")
    text = raw.strip()
    if not text or len(text) > _MAX_INPUT:
        return _invalid(raw)
    if text[:7].lower() == "mailto:":
        text = text[7:].strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if text.count("@") != 1:
        return _invalid(raw)
    local, domain = text.split("@")
    local = unicodedata.normalize("NFC", local).lower()
    domain = unicodedata.normalize("NFC", domain).rstrip(".")
    if not _local_ok(local) or not domain:
        return _invalid(raw)
    ascii_domain = _ascii_domain(domain)
    if ascii_domain is None or not _domain_ok(ascii_domain):
        return _invalid(raw)
    canonical = f"{local}@{ascii_domain}"
    if len(canonical) > _MAX_ADDRESS:
        return _invalid(raw)
    return Email(raw=raw, canonical=canonical, valid=True)
