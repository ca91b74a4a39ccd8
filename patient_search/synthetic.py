"""A deterministic synthetic clinic population, realistic enough to test ranking on.

Names follow their real frequency skew (Smith, Garcia and Nguyen are common) across the
naming traditions a US front desk meets, with the spellings records really hold: accents
kept or dropped, hyphenated and two-word surnames, particles (de la Cruz, van der Berg),
O'Brien with straight or curly apostrophes, "Mc Donald", suffixes, nicknames written as the
given name, upper-case legacy imports. Near-duplicates are made on purpose (namesakes with
another birth date, twins sharing a birth date, Jr/Sr pairs) so that ranking, not luck,
puts the right patient first. Phones are 555-exchange numbers in many typed formats,
emails use reserved example domains.

`generate` is a pure, seeded stream; `load` COPYs it into the clinic's source tables in
batches, with memory flat in n. Everything costly (weights, date strings, variants) is
precomputed so a million patients take well under a minute.
"""

from __future__ import annotations

import datetime as dt
import queue
import random
import sys
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, NamedTuple

import psycopg

from patient_search import names_data as data


class PatientRow(NamedTuple):
    """One row of the clinic's `patients` table, in column order."""

    id: str
    clinic_id: str
    mrn: str | None
    given_name: str | None
    middle_name: str | None
    family_name: str | None
    birth_date: dt.date | None
    sex: str | None
    postal_code: str | None
    active: bool
    updated_at: dt.datetime


class ContactRow(NamedTuple):
    """One row of the clinic's `patient_contacts` table, in column order."""

    id: str
    patient_id: str
    kind: str
    value: str
    use: str | None


PATIENT_COLUMNS = PatientRow._fields
CONTACT_COLUMNS = ContactRow._fields


class Weighted:
    """Weighted choice by one uniform draw: bisect on cumulative weights, no per-call setup."""

    __slots__ = ("cum", "items", "total")

    def __init__(self, pairs: Sequence[tuple[Any, float]]) -> None:
        self.items = tuple(p[0] for p in pairs)
        self.cum = list(accumulate(p[1] for p in pairs))
        self.total = self.cum[-1]

    def pick(self, u: float) -> Any:
        return self.items[bisect_right(self.cum, u * self.total)]


# --- phones ------------------------------------------------------------------------------

PhoneFormat = Callable[[str, str, str], str]

# How people and intake forms write a US number (area, exchange, line).
PHONE_FORMATS: dict[str, PhoneFormat] = {
    "paren": lambda a, e, n: f"({a}) {e}-{n}",
    "dashes": lambda a, e, n: f"{a}-{e}-{n}",
    "dots": lambda a, e, n: f"{a}.{e}.{n}",
    "intl_spaces": lambda a, e, n: f"+1 {a} {e} {n}",
    "digits": lambda a, e, n: f"{a}{e}{n}",
    "one_dashes": lambda a, e, n: f"1-{a}-{e}-{n}",
    "intl_paren": lambda a, e, n: f"+1 ({a}) {e}-{n}",
    "spaces": lambda a, e, n: f"{a} {e} {n}",
    "paren_tight": lambda a, e, n: f"({a}){e}-{n}",
    "e164": lambda a, e, n: f"+1{a}{e}{n}",
}
_PHONE_STYLE = Weighted(
    [
        (PHONE_FORMATS["paren"], 30),
        (PHONE_FORMATS["dashes"], 25),
        (PHONE_FORMATS["digits"], 12),
        (PHONE_FORMATS["dots"], 8),
        (PHONE_FORMATS["intl_spaces"], 7),
        (PHONE_FORMATS["spaces"], 5),
        (PHONE_FORMATS["one_dashes"], 4),
        (PHONE_FORMATS["intl_paren"], 4),
        (PHONE_FORMATS["paren_tight"], 3),
        (PHONE_FORMATS["e164"], 2),
    ]
)
EXCHANGE = "555"  # fictional exchange: numbers look real, parse as possible, ring nobody


def format_phone(digits10: str, style: str) -> str:
    """A 10-digit NANP number written in one of PHONE_FORMATS."""
    return PHONE_FORMATS[style](digits10[:3], digits10[3:6], digits10[6:])


# --- names -------------------------------------------------------------------------------

_SUFFIXES = Weighted(
    [(" Jr", 45), (" Jr.", 15), (" Sr", 10), (" II", 10), (" III", 15), (" IV", 5)]
)
SUFFIX_WORDS = ("jr", "jr.", "sr", "sr.", "ii", "iii", "iv")
_PARTICLES = ("de", "del", "la", "los", "van", "der", "den", "von", "da", "dos", "di")


def accented(name: str) -> str:
    """The accented spelling of every word of name that has one ("Jose Luis" -> "José Luis")."""
    words = name.split(" ")
    return " ".join("-".join(data.ACCENTED.get(w, w) for w in word.split("-")) for word in words)


def _family_variants(name: str) -> Weighted:
    """How records spell this surname, weighted: particles, apostrophes and Mc split or not."""
    out: list[tuple[str, float]] = [(name, 100.0)]
    words = name.split(" ")
    if "'" in name:
        out += [
            (name.replace("'", "’"), 35),
            (name.replace("'", ""), 6),
            (name.replace("'", " "), 3),
        ]
    elif name.startswith("Mc") and len(name) > 3 and name[2].isupper():
        out += [("Mc " + name[2:], 12), (name[:2] + name[2:].lower(), 5)]
    elif len(words) > 1 and words[0].lower() in _PARTICLES:
        title = " ".join(w[:1].upper() + w[1:] for w in words)
        joined = "".join(words)
        out += [
            (title, 45),
            (joined[:1].upper() + joined[1:].lower(), 12),
            ("".join(w[:1].upper() + w[1:] for w in words), 6),
        ]
    elif name.startswith(("St. ", "Saint-")):
        rest = name.split(" ", 1)[1] if name.startswith("St. ") else name[6:]
        out += [("St " + rest, 30), ("Saint " + rest, 10), ("St." + rest, 4)]
    elif "-" in name and name[:3] in ("Al-", "El-"):
        head, rest = name.split("-", 1)
        out += [(f"{head} {rest}", 25), (head + rest.lower(), 10), (f"{head.lower()}-{rest}", 10)]
    return Weighted(out)


@dataclass
class _Names:
    """Precomputed weighted tables of one naming tradition."""

    male: Weighted
    female: Weighted
    family: Weighted
    plain_family: Weighted  # no particle or multi-word names: parts of double surnames
    male_middle: Weighted
    female_middle: Weighted
    accent_rate: float
    middle_rate: float


def _weighted(spec: str) -> Weighted:
    return Weighted(data.parse_spec(spec))


def _tables() -> dict[str, _Names]:
    out: dict[str, _Names] = {}
    for key, g in data.GROUPS.items():
        family = data.parse_spec(g.family)
        plain = [(n, w) for n, w in family if " " not in n and "-" not in n and "'" not in n]
        out[key] = _Names(
            male=_weighted(g.male),
            female=_weighted(g.female),
            family=Weighted(family),
            plain_family=Weighted(plain),
            male_middle=_weighted(g.male_middle or g.male),
            female_middle=_weighted(g.female_middle or g.female),
            accent_rate=g.accent_rate,
            middle_rate=g.middle_rate,
        )
    return out


# --- dates -------------------------------------------------------------------------------

FIRST_YEAR, LAST_YEAR = 1930, 2025
_EPOCH = dt.date(FIRST_YEAR, 1, 1).toordinal()
_DATES = [dt.date.fromordinal(o) for o in range(_EPOCH, dt.date(LAST_YEAR, 12, 31).toordinal() + 1)]


def _year_weight(year: int) -> float:
    """A clinic's age mix: fewer of the very old, many working-age adults and children."""
    if year < 1945:
        return 0.35
    if year < 1965:
        return 0.95
    if year < 2005:
        return 1.2
    return 0.9


_YEARS = Weighted([(y, _year_weight(y)) for y in range(FIRST_YEAR, LAST_YEAR + 1)])
_YEAR_SPAN = {
    y: (dt.date(y, 1, 1).toordinal() - _EPOCH, dt.date(y, 12, 31).toordinal() - _EPOCH + 1)
    for y in range(FIRST_YEAR, LAST_YEAR + 1)
}


# --- clinics -----------------------------------------------------------------------------


def _mrn_formatter(style: int) -> Callable[[int], str]:
    """Each clinic's EHR writes MRNs its own way ("000412", "A-102938", "SJ0102938")."""
    if style == 0:
        return lambda n: f"{n:06d}"
    if style == 1:
        return lambda n: f"A-{n:06d}"
    if style == 2:
        return lambda n: f"SJ{n:07d}"
    if style == 3:
        return lambda n: f"{n + 1_000_000}"
    return lambda n: f"{n // 10000:03d}-{n % 10000:04d}"


@dataclass
class _Clinic:
    id: str
    mix: Weighted
    zips: tuple[str, ...]
    area_codes: tuple[str, ...]
    mrn: Callable[[int], str]
    upper_rate: float
    next_mrn: int
    recent: list[tuple[str, str | None, str, str | None, int]]  # given, middle, family, sex, year


def _clinics(count: int, rng: random.Random) -> list[_Clinic]:
    out = []
    for i in range(count):
        profile = data.CLINIC_PROFILES[i % len(data.CLINIC_PROFILES)]
        mix = [
            (name, float(w))
            for name, w in (item.rsplit(" ", 1) for item in profile.mix.split(", "))
        ]
        out.append(
            _Clinic(
                id=f"clinic-{i + 1}",
                mix=Weighted(mix),
                zips=profile.zips,
                area_codes=profile.area_codes,
                mrn=_mrn_formatter(i % 5),
                upper_rate=0.15 if i % 5 == 2 else 0.02,  # one clinic imported a legacy system
                next_mrn=rng.randrange(100, 5000),
                recent=[],
            )
        )
    return out


# --- the generator -----------------------------------------------------------------------

_SEX = Weighted([("female", 49.5), ("male", 48.5), ("other", 0.5), ("unknown", 0.5), (None, 1.0)])
_PHONE_COUNT = Weighted([(0, 8), (1, 45), (2, 35), (3, 12)])
_EMAIL_COUNT = Weighted([(0, 30), (1, 60), (2, 10)])
_DOMAINS = Weighted(data.EMAIL_DOMAINS)
_EMAIL_SHAPES = Weighted(
    [
        ("g.f", 30),
        ("gf", 12),
        ("if", 14),
        ("g.fN", 18),
        ("fiN", 8),
        ("g_f", 6),
        ("gN", 7),
        ("fg", 5),
    ]
)
_FIRST_USE = Weighted([("mobile", 70), ("home", 20), (None, 10)])
_OTHER_USE = Weighted([("home", 40), ("work", 35), ("mobile", 15), (None, 10)])

TWIN_RATE = 0.006
NAMESAKE_RATE = 0.012
JUNIOR_RATE = 0.006
NICKNAME_RATE = 0.06
ACTIVE_RATE = 0.93


def _ascii_word(text: str, cache: dict[str, str]) -> str:
    """Lower-case ASCII letters of a name, for email local parts (cached per name)."""
    hit = cache.get(text)
    if hit is None:
        from normalizers.text import fold

        hit = "".join(ch for ch in fold(text) if "a" <= ch <= "z")
        cache[text] = hit
    return hit


def generate(
    n: int, *, clinics: int = 3, seed: int = 0
) -> Iterator[tuple[PatientRow, list[ContactRow]]]:
    """Yield n patients with their contacts; the same arguments always give the same rows."""
    if n < 0 or clinics < 1:
        raise ValueError("n must be >= 0 and clinics >= 1")
    rng = random.Random(seed)
    rnd = rng.random
    tables = _tables()
    sites = _clinics(clinics, rng)
    variants: dict[str, Weighted] = {}
    accent_cache: dict[str, str] = {}
    ascii_cache: dict[str, str] = {}
    nick_pick = data.NICKNAMES
    stamps = [
        dt.datetime(2016, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randrange(300_000_000))
        for _ in range(4096)
    ]
    other_codes = data.OTHER_AREA_CODES
    # The last patient, its first phone and naming tradition: a twin shares them.
    prev: tuple[PatientRow, str | None, str] | None = None

    def accent(name: str) -> str:
        hit = accent_cache.get(name)
        if hit is None:
            hit = accent_cache[name] = accented(name)
        return hit

    def family_spelling(name: str) -> str:
        w = variants.get(name)
        if w is None:
            w = variants[name] = _family_variants(name)
        return str(w.pick(rnd()))

    for num in range(1, n + 1):
        pid = f"p{num:07d}"
        twin_of = prev if prev is not None and rnd() < TWIN_RATE else None
        if twin_of is not None:
            base = twin_of[0]
            site = next(s for s in sites if s.id == base.clinic_id)
        else:
            site = sites[int(rnd() * clinics)]
        sex = _SEX.pick(rnd())
        group = twin_of[2] if twin_of is not None else site.mix.pick(rnd())
        names = tables[group]
        is_female = sex == "female" or (sex != "male" and rnd() < 0.5)
        given_table = names.female if is_female else names.male
        given: str = given_table.pick(rnd())
        middle: str | None = None
        birth: dt.date | None
        shared_phone: str | None = None
        postal: str | None = None

        if twin_of is not None:
            base = twin_of[0]
            for _ in range(4):
                if given.lower() != (base.given_name or "").lower():
                    break
                given = given_table.pick(rnd())
            family = base.family_name or ""
            birth = base.birth_date
            postal = base.postal_code
            shared_phone = twin_of[1]
        else:
            r = rnd()
            recent = site.recent
            year = _YEARS.pick(rnd())
            relative = recent[int(rnd() * len(recent))] if recent else None
            if relative is not None and r < NAMESAKE_RATE:
                # Same name, another person: only the birth date tells them apart.
                given, middle, family, _, _ = relative
                if middle is not None and rnd() < 0.5:
                    middle = None
            elif relative is not None and r < NAMESAKE_RATE + JUNIOR_RATE and relative[3] == "male":
                # A son named after his father: "Jr" and a birth 20-40 years later.
                given, _, family, sex, father_year = relative
                is_female = False
                year = min(LAST_YEAR, father_year + 20 + int(rnd() * 20))
                if not family.rstrip().endswith(("Jr", "Jr.", "II", "III", "IV", "Sr")):
                    family = family.rstrip() + (" Jr" if rnd() < 0.8 else " II")
            else:
                family_names = names if rnd() < 0.88 else tables[site.mix.pick(rnd())]
                family = family_names.family.pick(rnd())
                if group == "hispanic" and rnd() < 0.12:
                    second = family_names.plain_family.pick(rnd())
                    if second != family and " " not in family:
                        family = f"{family}-{second}" if rnd() < 0.55 else f"{family} {second}"
                elif rnd() < 0.015 and " " not in family:
                    second = family_names.plain_family.pick(rnd())
                    if second != family:
                        family = f"{family}-{second}"
                family = family_spelling(family)
                if rnd() < names.accent_rate:
                    given, family = accent(given), accent(family)
                if rnd() < NICKNAME_RATE and given in nick_pick:
                    nicks = nick_pick[given]
                    given = nicks[int(rnd() * len(nicks))]
                if not is_female and rnd() < 0.025:
                    family += _SUFFIXES.pick(rnd())
            lo, hi = _YEAR_SPAN[year]
            birth = _DATES[lo + int(rnd() * (hi - lo))]
            if rnd() < 0.02:
                birth = None  # not recorded

        if middle is None and rnd() < names.middle_rate:
            middle = (names.female_middle if is_female else names.male_middle).pick(rnd())
            if middle == given:
                middle = None
            elif middle is not None and rnd() < 0.2:
                middle = middle[0] + ("." if rnd() < 0.3 else "")
        if rnd() < site.upper_rate:
            given, family = given.upper(), family.upper()
            middle = middle.upper() if middle else None
        elif rnd() < 0.003:
            family += " "  # stray space from a copy-paste
        if postal is None:
            r = rnd()
            if r < 0.03:
                postal = None
            else:
                postal = site.zips[int(rnd() * len(site.zips))]
                if r > 0.9:
                    postal = f"{postal}-{int(rnd() * 10000):04d}"

        site.next_mrn += 1 + int(rnd() * 3)
        patient = PatientRow(
            pid,
            site.id,
            site.mrn(site.next_mrn),
            given,
            middle,
            family,
            birth,
            sex,
            postal,
            rnd() < ACTIVE_RATE,
            stamps[int(rnd() * 4096)],
        )

        contacts: list[ContactRow] = []
        phones = _PHONE_COUNT.pick(rnd())
        first_phone: str | None = None
        for k in range(phones):
            if k == 0 and shared_phone is not None:
                digits = shared_phone
            else:
                area = (
                    site.area_codes[int(rnd() * len(site.area_codes))]
                    if rnd() < 0.55
                    else other_codes[int(rnd() * len(other_codes))]
                )
                digits = f"{area}{EXCHANGE}{int(rnd() * 10000):04d}"
            use = _FIRST_USE.pick(rnd()) if k == 0 else _OTHER_USE.pick(rnd())
            value = _PHONE_STYLE.pick(rnd())(digits[:3], digits[3:6], digits[6:])
            if use == "work" and rnd() < 0.15:
                value += f" x{10 + int(rnd() * 9989)}"
            if k == 0:
                first_phone = digits
            contacts.append(ContactRow(f"c{num:07d}-{k + 1}", pid, "phone", value, use))

        emails = _EMAIL_COUNT.pick(rnd())
        if emails:
            g = _ascii_word(given.split(" ")[0], ascii_cache) or "patient"
            f = _ascii_word(family, ascii_cache) or "x"
            yy = f"{birth.year % 100:02d}" if birth else f"{int(rnd() * 100):02d}"
            for k in range(emails):
                shape = _EMAIL_SHAPES.pick(rnd())
                num_part = yy if rnd() < 0.5 else str(1 + int(rnd() * 999))
                if shape == "g.f":
                    local = f"{g}.{f}"
                elif shape == "gf":
                    local = g + f
                elif shape == "if":
                    local = g[0] + f
                elif shape == "g.fN":
                    local = f"{g}.{f}{num_part}"
                elif shape == "fiN":
                    local = f"{f}{g[0]}{num_part}"
                elif shape == "g_f":
                    local = f"{g}_{f}"
                elif shape == "gN":
                    local = g + num_part
                else:
                    local = f"{f}.{g}"
                if k > 0:
                    local += str(2 + int(rnd() * 98))
                value = f"{local}@{_DOMAINS.pick(rnd())}"
                if rnd() < 0.08:
                    value = value[:1].upper() + value[1:]  # as typed on a phone keyboard
                contacts.append(
                    ContactRow(f"c{num:07d}-{phones + k + 1}", pid, "email", value, None)
                )

        if twin_of is None and len(site.recent) < 512:
            site.recent.append((given, middle, family, sex, birth.year if birth else 1970))
        elif twin_of is None:
            site.recent[int(rnd() * 512)] = (
                given,
                middle,
                family,
                sex,
                birth.year if birth else 1970,
            )
        prev = (patient, first_phone, group)
        yield patient, contacts


# --- loading -----------------------------------------------------------------------------

_COPY_PATIENTS = f"copy patients ({', '.join(PATIENT_COLUMNS)}) from stdin"
_COPY_CONTACTS = f"copy patient_contacts ({', '.join(CONTACT_COLUMNS)}) from stdin"


def load(
    conn: psycopg.Connection[Any],
    n: int,
    *,
    clinics: int = 3,
    seed: int = 0,
    progress: bool = False,
    batch: int = 50_000,
) -> int:
    """COPY n generated patients and their contacts into the source tables; returns n.

    Runs in the caller's transaction (the caller commits). PostgreSQL's share of the work
    (the contacts' foreign-key checks above all) is as large as Python's, so a writer
    thread COPYs batch k while this thread generates batch k+1: Python and PostgreSQL
    then use one core each. At most two batches wait, which keeps memory flat in n.
    """
    from tqdm import tqdm

    if batch < 1:
        raise ValueError("batch must be >= 1")
    work: queue.Queue[tuple[list[PatientRow], list[ContactRow]] | None] = queue.Queue(maxsize=1)
    failure: list[BaseException] = []
    bar = tqdm(
        total=n,
        unit=" patients",
        unit_scale=True,
        disable=not progress,
        file=sys.stderr,
        desc="patients",
    )

    def writer() -> None:
        with conn.cursor() as cur:
            while (item := work.get()) is not None:
                if failure:
                    continue  # drain: the producer learns of the failure at its next put
                patients, contacts = item
                try:
                    with cur.copy(_COPY_PATIENTS) as copy:
                        for row in patients:
                            copy.write_row(row)
                    with cur.copy(_COPY_CONTACTS) as copy:
                        for contact in contacts:
                            copy.write_row(contact)
                except BaseException as exc:
                    failure.append(exc)
                bar.update(len(patients))

    thread = threading.Thread(target=writer, name="synthetic-copy", daemon=True)
    thread.start()
    written = 0
    try:
        rows = generate(n, clinics=clinics, seed=seed)
        while written < n and not failure:
            patients: list[PatientRow] = []
            contacts: list[ContactRow] = []
            add, extend = patients.append, contacts.extend
            for _, (patient, its_contacts) in zip(range(batch), rows, strict=False):
                add(patient)
                extend(its_contacts)
            work.put((patients, contacts))
            written += len(patients)
    finally:
        work.put(None)
        thread.join()
        bar.close()
    if failure:
        raise failure[0]
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m patient_search.synthetic N` loads N patients into PATIENT_SEARCH_DATABASE_URL."""
    import argparse
    import os
    import time

    from core.schema import create_source_tables

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("patients", type=int)
    parser.add_argument("--clinics", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    url = os.environ["PATIENT_SEARCH_DATABASE_URL"]
    with psycopg.connect(url) as conn:
        create_source_tables(conn)
        started = time.perf_counter()
        load(conn, args.patients, clinics=args.clinics, seed=args.seed, progress=True)
        conn.commit()
        seconds = time.perf_counter() - started
    print(f"{args.patients:,} patients in {seconds:.1f} s ({args.patients / seconds:,.0f}/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
