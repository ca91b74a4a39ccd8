"""Name frequency tables for the synthetic population, loaded from `names.toml`.

The tables are data (written by hand, no Faker; see the file's header for where the
weights come from), so they live in a data file beside this module and ship with the
package; this module only gives them types. Each name list is a spec string
"Name weight, Name weight, ..." read with `parse_spec`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any


def parse_spec(spec: str) -> tuple[tuple[str, float], ...]:
    """ "Smith 828, de la Cruz 25" -> (("Smith", 828.0), ("de la Cruz", 25.0))."""
    out: list[tuple[str, float]] = []
    for item in spec.replace("\n", " ").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, weight = item.rpartition(" ")
        out.append((name.strip(), float(weight)))
    return tuple(out)


@dataclass(frozen=True)
class Group:
    """One naming tradition: given names by sex, middle names, family names, accent odds."""

    male: str
    female: str
    family: str
    accent_rate: float = 0.0  # share of records keeping the accented spelling
    male_middle: str | None = None  # None: middles are drawn from the given names
    female_middle: str | None = None
    middle_rate: float = 0.65  # share of records with a middle name


@dataclass(frozen=True)
class ClinicProfile:
    """Common ZIP prefixes, phone area codes and the naming mix of a clinic's catchment area."""

    city: str
    zips: tuple[str, ...]
    area_codes: tuple[str, ...]
    mix: str  # "group weight, ..."


def _load() -> dict[str, Any]:
    text = resources.files("patient_search").joinpath("names.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


_TABLES = _load()

GROUPS: dict[str, Group] = {key: Group(**spec) for key, spec in _TABLES["groups"].items()}

# Accented spellings a record may carry. Applied per whole word ("Jose Luis" -> "José Luis").
ACCENTED: dict[str, str] = dict(_TABLES["accented"])

# Formal given name -> nicknames people go by (and front desks write down).
NICKNAMES: dict[str, tuple[str, ...]] = {
    formal: tuple(nicks) for formal, nicks in _TABLES["nicknames"].items()
}

CLINIC_PROFILES: tuple[ClinicProfile, ...] = tuple(
    ClinicProfile(
        city=p["city"], zips=tuple(p["zips"]), area_codes=tuple(p["area_codes"]), mix=p["mix"]
    )
    for p in _TABLES["clinic_profiles"]
)

# Area codes for people whose number is from elsewhere (moved, kept their mobile).
OTHER_AREA_CODES: tuple[str, ...] = tuple(_TABLES["other_area_codes"].split())

# Reserved example domains (RFC 2606): realistic shapes, no real mailbox.
EMAIL_DOMAINS: tuple[tuple[str, float], ...] = tuple(_TABLES["email_domains"].items())
