"""Search-box queries with the mistakes front-desk staff really make, each with its answer.

Every query names one target patient (and its clinic) and an error kind, so the
relevance benchmark can report recall per kind. Targets are active patients; identifier
queries (full phone, email) only use values no other patient of the clinic shares, since
a shared household number has no single right answer. The same population and seed
always give the same queries.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from patient_search import names_data as data
from patient_search.synthetic import (
    SUFFIX_WORDS,
    ContactRow,
    PatientRow,
    accented,
    format_phone,
)


@dataclass(frozen=True)
class Query:
    """One search-box string, what it is testing, and whom it must find."""

    kind: str
    group: str  # name | name_dob | identifier | prefix | multi | multi_dob (two mistakes)
    q: str
    target_id: str
    clinic_id: str


Person = tuple[PatientRow, Sequence[ContactRow]]

# --- text helpers ------------------------------------------------------------------------

_NOT_DECOMPOSABLE = str.maketrans("ĐđŁłØøßÆæŒœ", "DdLlOosAaOo")
_KEYBOARD = [
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
]
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_KEYBOARD):
    for _c, _ch in enumerate(_row):
        near = [_row[_c - 1] if _c > 0 else "", _row[_c + 1] if _c + 1 < len(_row) else ""]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_KEYBOARD):
                near += [
                    _KEYBOARD[_other][k] for k in (_c - 1, _c) if 0 <= k < len(_KEYBOARD[_other])
                ]
        _NEIGHBOURS[_ch] = "".join(near)

_MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip


def strip_accents(text: str) -> str:
    """ "Nguyễn" -> "Nguyen", "Łukasz" -> "Lukasz": what a US keyboard types."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_NOT_DECOMPOSABLE))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def letters(text: str) -> str:
    return "".join(ch for ch in strip_accents(text).lower() if "a" <= ch <= "z")


def base_family(p: PatientRow) -> str:
    """The family name as staff say it: no "Jr"/"III", no stray spaces."""
    words = (p.family_name or "").split()
    while len(words) > 1 and words[-1].lower() in SUFFIX_WORDS:
        words.pop()
    return " ".join(words)


def given_of(p: PatientRow) -> str:
    return " ".join((p.given_name or "").split())


def digits10(value: str) -> str | None:
    """The 10 NANP digits of a stored phone value, extension and country code dropped."""
    main = re.split(r"\s*x", value, maxsplit=1)[0]
    d = "".join(ch for ch in main if ch.isdigit())
    if len(d) == 11 and d[0] == "1":
        d = d[1:]
    return d if len(d) == 10 else None


def _as_typed(text: str, rng: random.Random) -> str:
    """Staff mostly type lower case; some copy the capitalisation, a few have caps lock on."""
    r = rng.random()
    if r < 0.6:
        return text.lower()
    if r < 0.93:
        return text
    return text.upper()


# --- name mistakes -----------------------------------------------------------------------


def _positions(word: str, pair: bool = False) -> list[int]:
    """Letter positions after the first (a first-letter typo is rare at a front desk)."""
    out = []
    for i in range(1, len(word) - (1 if pair else 0)):
        if word[i].isalpha() and (not pair or word[i + 1].isalpha()):
            out.append(i)
    return out


def typo_substitution(word: str, rng: random.Random) -> str | None:
    spots = [i for i in _positions(word) if word[i].lower() in _NEIGHBOURS]
    if not spots:
        return None
    i = rng.choice(spots)
    repl = rng.choice(_NEIGHBOURS[word[i].lower()])
    return word[:i] + repl + word[i + 1 :]


def typo_transposition(word: str, rng: random.Random) -> str | None:
    spots = [i for i in _positions(word, pair=True) if word[i].lower() != word[i + 1].lower()]
    if not spots:
        return None
    i = rng.choice(spots)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def typo_dropped(word: str, rng: random.Random) -> str | None:
    spots = _positions(word)
    if not spots:
        return None
    i = rng.choice(spots)
    return word[:i] + word[i + 1 :]


def typo_doubled(word: str, rng: random.Random) -> str | None:
    spots = _positions(word)
    if not spots:
        return None
    i = rng.choice(spots)
    return word[:i] + word[i] + word[i:]


Typo = Callable[[str, random.Random], str | None]


def _typo_name(p: PatientRow, typo: Typo, rng: random.Random) -> tuple[str, str] | None:
    """(given, family) with one typo in the family name (60%) or the given name."""
    given, family = given_of(p), base_family(p)
    order = ["family", "given"] if rng.random() < 0.6 else ["given", "family"]
    for part in order:
        word = family if part == "family" else given
        if len(letters(word)) < 4:
            continue
        changed = typo(word, rng)
        if changed and letters(changed) != letters(word):
            return (given, changed) if part == "family" else (changed, family)
    return None


_REVERSE_NICKNAMES: dict[str, list[str]] = {}
for _formal, _nicks in data.NICKNAMES.items():
    for _nick in _nicks:
        _REVERSE_NICKNAMES.setdefault(_nick, []).append(_formal)
_FEMALE_NAMES = {name for g in data.GROUPS.values() for name, _ in data.parse_spec(g.female)} | {
    "Samantha",
    "Patricia",
}


def nickname_swap(p: PatientRow, rng: random.Random) -> str | None:
    """Bill for William, and William for a record that says Bill."""
    first = strip_accents(given_of(p).split(" ")[0]).title()
    if first in data.NICKNAMES:
        return rng.choice(data.NICKNAMES[first])
    formals = _REVERSE_NICKNAMES.get(first)
    if not formals:
        return None
    female = p.sex == "female"
    fitting = [f for f in formals if (f in _FEMALE_NAMES) == female] or formals
    return rng.choice(fitting)


def spacing_variant(family: str, rng: random.Random) -> str | None:
    """garcia lopez / garcialopez / garcia-lopez, o'brien / obrien, mcdonald / mc donald."""
    options: list[str] = []
    mc = re.match(r"^(Ma?c)( ?)([A-Z])", family)
    if mc and mc.group(2):
        options.append(family.replace(" ", "", 1))  # "Mc Donald" -> "McDonald"
    elif mc:
        options.append(f"{mc.group(1)} {family[len(mc.group(1)) :]}")  # and back
    elif "-" in family:
        options += [family.replace("-", " "), family.replace("-", "")]
    elif " " in family:
        options += [family.replace(" ", ""), family.replace(" ", "-")]
    if "'" in family or "’" in family:
        plain = family.replace("’", "'")
        options += [plain.replace("'", ""), plain.replace("'", " "), plain.replace("'", "’")]
        if "’" in family:
            options.append(plain)
    options = [o for o in options if o != family]
    return rng.choice(options) if options else None


# --- dates -------------------------------------------------------------------------------

DateFormat = Callable[[dt.date], str]

DATE_FORMATS: dict[str, DateFormat] = {
    "iso": lambda d: d.isoformat(),
    "mdy": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    "mdy_short": lambda d: f"{d.month}/{d.day}/{d.year % 100:02d}",
    "dmy_dots": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "mon_d_yyyy": lambda d: f"{_MONTHS[d.month - 1][:3]} {d.day} {d.year}",
    "d_month_yyyy": lambda d: f"{d.day} {_MONTHS[d.month - 1]} {d.year}",
    "compact": lambda d: f"{d.year}{d.month:02d}{d.day:02d}",
}


def _any_date(d: dt.date, rng: random.Random) -> str:
    return DATE_FORMATS[rng.choice(list(DATE_FORMATS))](d)


def dob_one_digit_wrong(d: dt.date, rng: random.Random) -> str | None:
    """MM/DD/YYYY with one digit mistyped, still a real date in the past."""
    text = f"{d.month:02d}/{d.day:02d}/{d.year}"
    spots = [i for i, ch in enumerate(text) if ch.isdigit()]
    for _ in range(30):
        i = rng.choice(spots)
        new = text[:i] + str(rng.randrange(10)) + text[i + 1 :]
        try:
            m, dd, y = (int(x) for x in new.split("/"))
            other = dt.date(y, m, dd)
        except ValueError:
            continue
        if other != d and y >= 1900 and other <= dt.date.today():
            return new
    return None


# --- kinds -------------------------------------------------------------------------------


@dataclass
class _Ctx:
    """What a builder needs beyond the patient: a seeded rng and clinic-wide uniqueness."""

    rng: random.Random
    phone_owners: Counter[tuple[str, str]]
    email_owners: Counter[tuple[str, str]]


Builder = Callable[[PatientRow, Sequence[ContactRow], _Ctx], str | None]


def _name(given: str, family: str, rng: random.Random) -> str:
    return _as_typed(f"{given} {family}", rng)


def _with_dob(p: PatientRow, fmt: str | None, ctx: _Ctx, name: str) -> str | None:
    if p.birth_date is None:
        return None
    date = DATE_FORMATS[fmt](p.birth_date) if fmt else _any_date(p.birth_date, ctx.rng)
    return f"{name} {date}"


def _typo_builder(typo: Typo) -> Builder:
    def build(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
        parts = _typo_name(p, typo, ctx.rng)
        return _name(*parts, ctx.rng) if parts else None

    return build


def _dob_builder(fmt: str) -> Builder:
    def build(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
        return _with_dob(p, fmt, ctx, _name(given_of(p), base_family(p), ctx.rng))

    return build


def _unique_phone(p: PatientRow, contacts: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    phones = [digits10(c.value) for c in contacts if c.kind == "phone"]
    unique = [d for d in phones if d and ctx.phone_owners[(p.clinic_id, d)] == 1]
    return ctx.rng.choice(unique) if unique else None


def _phone_builder(style: str) -> Builder:
    def build(p: PatientRow, contacts: Sequence[ContactRow], ctx: _Ctx) -> str | None:
        d = _unique_phone(p, contacts, ctx)
        return format_phone(d, style) if d else None

    return build


def _exact(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    return _name(given_of(p), base_family(p), ctx.rng)


def _nickname(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    nick = nickname_swap(p, ctx.rng)
    return _name(nick, base_family(p), ctx.rng) if nick else None


def _nickname_dob(p: PatientRow, c: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    name = _nickname(p, c, ctx)
    return _with_dob(p, None, ctx, name) if name else None


def _swapped(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    return _as_typed(f"{base_family(p)} {given_of(p)}", ctx.rng)


def _last_first(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    return _as_typed(f"{base_family(p)}, {given_of(p)}", ctx.rng)


def _last_first_dob(p: PatientRow, c: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    return _with_dob(p, None, ctx, _as_typed(f"{base_family(p)}, {given_of(p)}", ctx.rng))


def _spacing(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    variant = spacing_variant(base_family(p), ctx.rng)
    return _name(given_of(p), variant, ctx.rng) if variant else None


def _accents_stripped(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    given, family = given_of(p), base_family(p)
    if strip_accents(given + family) == given + family:
        return None
    return _name(strip_accents(given), strip_accents(family), ctx.rng)


def _accents_added(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    given, family = given_of(p), base_family(p)
    g2, f2 = accented(given.title()), accented(family)
    if strip_accents(given + family) != given + family or (g2, f2) == (given.title(), family):
        return None  # already accented, or no accented spelling exists
    return f"{g2} {f2}".lower() if ctx.rng.random() < 0.5 else f"{g2} {f2}"


def _swapped_dob(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    d = p.birth_date
    if d is None or d.day == d.month:
        return None
    return f"{_name(given_of(p), base_family(p), ctx.rng)} {d.day:02d}/{d.month:02d}/{d.year}"


def _digit_dob(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    if p.birth_date is None:
        return None
    wrong = dob_one_digit_wrong(p.birth_date, ctx.rng)
    return f"{_name(given_of(p), base_family(p), ctx.rng)} {wrong}" if wrong else None


def _family_dob(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    return _with_dob(p, None, ctx, _as_typed(base_family(p), ctx.rng))


def _given_dob(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    return _with_dob(p, None, ctx, _as_typed(given_of(p), ctx.rng))


def _typo_dob(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    typo = ctx.rng.choice([typo_substitution, typo_transposition, typo_dropped, typo_doubled])
    parts = _typo_name(p, typo, ctx.rng)
    return _with_dob(p, None, ctx, _name(*parts, ctx.rng)) if parts else None


# --- more than one mistake per query (what keeps the benchmark discriminating) -----------

_TYPOS: tuple[Typo, ...] = (typo_substitution, typo_transposition, typo_dropped, typo_doubled)


def _typo_word(word: str, rng: random.Random) -> str | None:
    """One random typo in a word of four letters or more, else None."""
    if len(letters(word)) < 4:
        return None
    changed = rng.choice(_TYPOS)(word, rng)
    return changed if changed and letters(changed) != letters(word) else None


def _two_typos(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    """A typo in the given name and another in the family name."""
    given = _typo_word(given_of(p), ctx.rng)
    family = _typo_word(base_family(p), ctx.rng)
    return _name(given, family, ctx.rng) if given and family else None


def _nickname_typo(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    """Bill for William, and a typo in the family name."""
    nick = nickname_swap(p, ctx.rng)
    family = _typo_word(base_family(p), ctx.rng)
    return _name(nick, family, ctx.rng) if nick and family else None


def _swapped_typo(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    """Family name first, with a typo in it."""
    family = _typo_word(base_family(p), ctx.rng)
    return _as_typed(f"{family} {given_of(p)}", ctx.rng) if family else None


def _typo_digit_dob(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    """A typo in the name and one digit of the date wrong."""
    parts = _typo_name(p, ctx.rng.choice(_TYPOS), ctx.rng)
    wrong = dob_one_digit_wrong(p.birth_date, ctx.rng) if p.birth_date else None
    return f"{_name(*parts, ctx.rng)} {wrong}" if parts and wrong else None


def _nickname_swapped_dob(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    """A nickname, and day and month swapped."""
    nick = nickname_swap(p, ctx.rng)
    d = p.birth_date
    if not nick or d is None or d.day == d.month or d.day > 12:
        return None
    return f"{_name(nick, base_family(p), ctx.rng)} {d.day:02d}/{d.month:02d}/{d.year}"


def _family_typo_dob(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    """Only the family name, with a typo, and the date."""
    family = _typo_word(base_family(p), ctx.rng)
    return _with_dob(p, None, ctx, _as_typed(family, ctx.rng)) if family else None


def _phone_last4(p: PatientRow, c: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    d = _unique_phone(p, c, ctx)
    return f"{_as_typed(base_family(p), ctx.rng)} {d[6:]}" if d else None


def _phone_last7(p: PatientRow, c: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    d = _unique_phone(p, c, ctx)
    return f"{_name(given_of(p), base_family(p), ctx.rng)} {d[3:6]}-{d[6:]}" if d else None


def _mrn(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    return p.mrn


def _mrn_label(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    if not p.mrn:
        return None
    return ctx.rng.choice(["MRN {}", "MRN: {}", "mrn#{}", "MRN #{}", "mrn {}"]).format(p.mrn)


def _email(p: PatientRow, contacts: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    emails = [
        c.value
        for c in contacts
        if c.kind == "email" and ctx.email_owners[(p.clinic_id, c.value.lower())] == 1
    ]
    if not emails:
        return None
    value = ctx.rng.choice(emails)
    r = ctx.rng.random()
    return value.lower() if r < 0.7 else value.upper() if r < 0.8 else value


def _prefix(p: PatientRow, _: Sequence[ContactRow], ctx: _Ctx) -> str | None:
    family, given = letters(base_family(p)), letters(given_of(p))
    if len(family) < 3 or len(given) < 2:
        return None
    return f"{family[:3]} {given[:2]}"


# kind -> (group, builder). Order is the order of the report.
KINDS: dict[str, tuple[str, Builder]] = {
    "exact": ("name", _exact),
    "typo_substitution": ("name", _typo_builder(typo_substitution)),
    "typo_transposition": ("name", _typo_builder(typo_transposition)),
    "typo_dropped": ("name", _typo_builder(typo_dropped)),
    "typo_doubled": ("name", _typo_builder(typo_doubled)),
    "nickname": ("name", _nickname),
    "swapped": ("name", _swapped),
    "last_first": ("name", _last_first),
    "hyphen_space": ("name", _spacing),
    "accents_stripped": ("name", _accents_stripped),
    "accents_added": ("name", _accents_added),
    **{f"dob_{fmt}": ("name_dob", _dob_builder(fmt)) for fmt in DATE_FORMATS},
    "dob_day_month_swapped": ("name_dob", _swapped_dob),
    "dob_digit_wrong": ("name_dob", _digit_dob),
    "family_dob": ("name_dob", _family_dob),
    "given_dob": ("name_dob", _given_dob),
    "typo_dob": ("name_dob", _typo_dob),
    "nickname_dob": ("name_dob", _nickname_dob),
    "last_first_dob": ("name_dob", _last_first_dob),
    "phone_paren": ("identifier", _phone_builder("paren")),
    "phone_dashes": ("identifier", _phone_builder("dashes")),
    "phone_dots": ("identifier", _phone_builder("dots")),
    "phone_intl": ("identifier", _phone_builder("intl_spaces")),
    "phone_digits": ("identifier", _phone_builder("digits")),
    "phone_last4_name": ("identifier", _phone_last4),
    "phone_last7_name": ("identifier", _phone_last7),
    "mrn": ("identifier", _mrn),
    "mrn_label": ("identifier", _mrn_label),
    "email": ("identifier", _email),
    "prefix": ("prefix", _prefix),
    "two_typos": ("multi", _two_typos),
    "nickname_typo": ("multi", _nickname_typo),
    "swapped_typo": ("multi", _swapped_typo),
    "typo_digit_dob": ("multi_dob", _typo_digit_dob),
    "nickname_swapped_dob": ("multi_dob", _nickname_swapped_dob),
    "family_typo_dob": ("multi_dob", _family_typo_dob),
}
GROUPS = ("name", "name_dob", "identifier", "prefix", "multi", "multi_dob")


def make_queries(
    population: Sequence[Person],
    per_kind: int,
    *,
    seed: int = 0,
    kinds: Sequence[str] | None = None,
) -> list[Query]:
    """Up to per_kind queries of every kind, each about a random eligible active patient."""
    rng = random.Random(seed)
    phone_owners: Counter[tuple[str, str]] = Counter()
    email_owners: Counter[tuple[str, str]] = Counter()
    for p, contacts in population:
        for c in contacts:
            if c.kind == "phone" and (d := digits10(c.value)):
                phone_owners[(p.clinic_id, d)] += 1
            elif c.kind == "email":
                email_owners[(p.clinic_id, c.value.lower())] += 1
    ctx = _Ctx(rng, phone_owners, email_owners)
    targets = [(p, c) for p, c in population if p.active and given_of(p) and base_family(p)]
    out: list[Query] = []
    for kind in kinds or KINDS:
        group, build = KINDS[kind]
        made = 0
        for i in rng.sample(range(len(targets)), len(targets)):
            if made >= per_kind:
                break
            p, contacts = targets[i]
            q = build(p, contacts, ctx)
            if q:
                out.append(Query(kind, group, " ".join(q.split()), p.id, p.clinic_id))
                made += 1
    return out
