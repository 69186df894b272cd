"""Masking of obvious variables (numbers, ids, addresses, paths, times) in log messages.

Template mining works far better when values that are *obviously* variable never reach
the similarity step: two lines that differ only in an IP address or a block id should not
have to win a similarity vote to be grouped. Each rule replaces what it matches with
``<*>``, the wildcard the miner also uses, so a masked token and a generalised template
position look the same. All rules are compiled into one alternation, so masking a line
is a single regex pass; the order of the rules decides which wins at the same position
(a timestamp before the numbers inside it, an IP before its octets).

Rules are deliberately generic: nothing here knows which system wrote the log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_MASK_RULES", "WILDCARD", "MaskRule", "Masker"]

WILDCARD = "<*>"

_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_DAYS = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_HEX4 = "[0-9a-fA-F]{1,4}"
# Top-level domains worth recognising without a digit in the name. Two-letter country codes
# are only accepted with three or more labels, so "main.go" or "setup.py" are not hosts.
_GTLD = "com|net|org|edu|gov|mil|int|info|biz|io|local|lan|internal|localdomain|cloud"


@dataclass(frozen=True, slots=True)
class MaskRule:
    """One masking rule.

    ``first`` is a regex character class of the characters a match can start with; the
    combined regex dispatches on it, so at a given position only rules that can start
    there are tried. ``gate`` names a cheap whole-line precondition (see :data:`GATES`):
    a line failing it cannot match the rule, which is then left out for that line.
    """

    name: str
    pattern: str
    first: str = r"[0-9]"
    gate: str = "digit"


# Cheap whole-line preconditions, in the order of the bits of a line's gate key.
GATES: tuple[str, ...] = ("digit", "at", "scheme", "slash", "dotword")
_DIGIT_RE = re.compile(r"\d")
_DOTWORD_RE = re.compile(r"[\w-]\.[A-Za-z]{2}")
_HEX = "[0-9a-fA-F]"

DEFAULT_MASK_RULES: tuple[MaskRule, ...] = (
    MaskRule("uuid", r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b", _HEX),
    MaskRule("url", r"[a-zA-Z][a-zA-Z0-9+.-]{1,15}://[^\s\"'<>]+", "[a-zA-Z]", "scheme"),
    MaskRule("email", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", r"[\w.+-]", "at"),
    # ISO-8601 date[time].
    MaskRule(
        "datetime_iso",
        r"\d{4}[-/.]\d{2}[-/.]\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
        r"(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w.])",
    ),
    # "Sun Jul 10 03:55:15 2005" / "Jul 10 03:55:15" / "10/Oct/2000:13:55:36 -0700".
    MaskRule(
        "datetime_words",
        rf"(?:(?:{_DAYS}),?\s+)?(?:{_MONTHS})\s+\d{{1,2}},?\s+\d{{2}}:\d{{2}}:\d{{2}}"
        r"(?:\.\d+)?(?:\s+\d{4}\b)?",
        "[A-Z]",
    ),
    MaskRule(
        "datetime_clf",
        rf"\d{{2}}/(?:{_MONTHS})/\d{{4}}:\d{{2}}:\d{{2}}:\d{{2}}(?:\s[+-]\d{{4}})?",
    ),
    MaskRule("time", r"\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"),
    MaskRule("mac", r"[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5,}\b", _HEX),
    MaskRule(
        "ipv6",
        rf"(?<![\w:])(?:(?:{_HEX4}:){{7}}{_HEX4}|(?:{_HEX4}:){{1,6}}:(?:{_HEX4}:){{0,5}}{_HEX4}"
        rf"|::(?:{_HEX4}:){{0,5}}{_HEX4})(?![\w:])",
        "[0-9a-fA-F:]",
    ),
    # Host names: a known generic TLD, or 3+ labels ending in a country code. Before ipv4,
    # so "62.99.164.82.sh.example.at" is one host, not an address plus a tail.
    MaskRule(
        "hostname",
        r"(?<![\w.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
        rf"(?:{_GTLD})(?![\w-]|\.\w)"
        r"|(?<![\w.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){2,}[a-z]{2}"
        r"(?![\w-]|\.\w)",
        "[A-Za-z0-9]",
        "dotword",
    ),
    MaskRule("ipv4", r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\w-]|\.\w)"),
    MaskRule(
        "path",
        r"(?<![\w./~-])(?:~|\.{1,2})?(?:[/\\]+[\w.@%+~-]+)+[/\\]?",
        r"[/\\~.]",
        "slash",
    ),
    MaskRule("hex_prefixed", r"0[xX][0-9a-fA-F]+\b", "[0]"),
    MaskRule("hex", r"(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{6,}\b", _HEX),
    # Numbers (with optional sign, decimals, version dots and a short unit: 64kB, 10ms).
    # Not when glued to a preceding letter or digit: "R02", "ipv6", "fpr29" stay as they are.
    MaskRule(
        "number",
        r"[-+]?v?\d+(?:[.,:]\d+)*(?:[a-zA-Z%]{1,3})?(?![A-Za-z0-9])",
        "[-+v0-9]",
    ),
)

# Characters a match may start with are grouped by which rules can start there.
_FIRST_CHARS = "".join(chr(c) for c in range(33, 127))


class Masker:
    """Applies an ordered list of :class:`MaskRule` in one regex pass per line.

    ``disabled`` names rules to leave out; ``extra`` rules are tried *before* the defaults,
    so a deployment can add a pattern for its own ids without editing this module. Every
    rule must only match where the preceding character is not a letter or digit (the
    combined regex checks that once, so mid-word positions are skipped cheaply).

    The combined regex is built per gate key (which cheap preconditions a line passes)
    and cached on the instance, at most ``2 ** len(GATES)`` of them.
    """

    __slots__ = ("_cache", "rules")

    def __init__(
        self,
        rules: Sequence[MaskRule] = DEFAULT_MASK_RULES,
        *,
        extra: Iterable[MaskRule] = (),
        disabled: Iterable[str] = (),
    ) -> None:
        off = set(disabled)
        self.rules: tuple[MaskRule, ...] = tuple(r for r in (*extra, *rules) if r.name not in off)
        unknown = {r.gate for r in self.rules} - set(GATES)
        if unknown:
            raise ValueError(f"unknown mask gate(s): {sorted(unknown)}")
        for r in self.rules:
            re.compile(r.pattern)  # fail early, naming nothing half-built
        self._cache: dict[int, re.Pattern[str] | None] = {}

    def _regex_for(self, key: int) -> re.Pattern[str] | None:
        rx = self._cache.get(key, False)
        if rx is False:
            rx = self._compile([r for r in self.rules if key >> GATES.index(r.gate) & 1])
            self._cache[key] = rx
        return rx  # type: ignore[return-value]

    @staticmethod
    def _compile(rules: list[MaskRule]) -> re.Pattern[str] | None:
        if not rules:
            return None
        firsts = [re.compile(r.first) for r in rules]
        groups: dict[tuple[int, ...], list[str]] = {}
        for ch in _FIRST_CHARS:
            members = tuple(i for i, f in enumerate(firsts) if f.fullmatch(ch))
            if members:
                groups.setdefault(members, []).append(ch)
        branches = []
        for members, chars in groups.items():
            cls = "".join(re.escape(c) for c in chars)
            alts = "|".join(f"(?:{rules[i].pattern})" for i in members)
            branches.append(f"(?=[{cls}])(?:{alts})")
        return re.compile("(?<![A-Za-z0-9])(?:" + "|".join(branches) + ")")

    def gate_key(self, text: str) -> int:
        """Bit mask of the :data:`GATES` that ``text`` passes."""
        key = 1 if _DIGIT_RE.search(text) else 0
        if "@" in text:
            key |= 2
        if "://" in text:
            key |= 4
        if "/" in text or "\\" in text:
            key |= 8
        if _DOTWORD_RE.search(text):
            key |= 16
        return key

    def mask(self, text: str) -> str:
        """Return ``text`` with every rule match replaced by ``<*>``."""
        key = self.gate_key(text)
        if not key:
            return text
        rx = self._regex_for(key)
        return text if rx is None else rx.sub(WILDCARD, text)
