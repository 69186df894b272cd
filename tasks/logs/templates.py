"""Incremental log template mining (Drain-style) with JSON-serialisable state.

Why Drain: it is online (one pass, lines in streaming order), needs no training set and
is fast, because a line is compared only with templates that share its length and its
first tokens. The steps for each line are:

1. the miner is given the *message*: the header (timestamp, level, host, pid, logger)
   was split off once by the file's learned format (:mod:`tasks.logs.lineparse`);
2. mask obvious variables (:mod:`tasks.logs.masking`);
3. route by (token count, first ``prefix_tokens`` tokens) to a leaf of a fixed-depth tree
   (tokens holding a digit or a wildcard route through a shared ``<*>`` branch);
4. in the leaf pick the template with the highest share of matching positions; if that
   share is at least ``sim_threshold`` the line joins it (differing positions become
   ``<*>``), otherwise it starts a new template.

Leaves are not scanned template by template: each (token count, first token) group keeps
an inverted index (position, token) -> templates, and only templates that can reach the
threshold are compared, so free text that grows thousands of templates in one leaf does
not make mining quadratic.

Departures from the paper, each for a reason:

* two masked values at the same position count as a match (the paper counts every
  wildcard position as a mismatch, which punishes exactly the lines masking cleaned up);
  positions a template has *generalised* to ``<*>`` still do not count, as in Drain;
* a ``key=word`` token (``user=root``, ``status=ok``) must match exactly: a categorical
  value in a key=value pair usually names a different event, while values with digits
  or dots are masked or merged as usual. ``kv_max_values`` caps this per key, so
  ``user=<name>`` cannot grow a template per user;
* on a miss, templates under the same *first* token are searched too, with a higher bar
  (``relaxed_threshold``), because a variable word in the second token otherwise opens
  a new branch, and so a new template, per value;
* identical (raw or masked) messages are memoised, so repeats skip masking and the tree.

Template ids are small integers given in creation order; they never change, and the state
(``to_state``/``from_state``) keeps each template's place in the tree, so a reloaded miner
assigns every later line exactly as the original would have (ties go to the oldest
template, so the result does not depend on hash or insertion order).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tasks.logs.masking import WILDCARD, Masker

__all__ = ["STATE_VERSION", "Template", "TemplateMiner"]

STATE_VERSION = 1

# "user=root", "state=RUNNING", "mode=read-only": a key and a bare-word value.
_CATEGORICAL_KV = re.compile(r"[A-Za-z_][\w.-]*=[A-Za-z][A-Za-z_-]*[,;]?")
_KV_KEY = re.compile(r"[A-Za-z_][\w.-]*")
_KV_WILDCARD = "=" + WILDCARD
_DIGIT = re.compile(r"\d")
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")


@dataclass(slots=True)
class Template:
    """A mined template: stable id, current tokens, number of lines seen, tree route."""

    id: int
    tokens: list[str]
    count: int
    route: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


class TemplateMiner:
    """Online Drain-style template miner.

    Args:
        sim_threshold: minimum share of matching token positions to join a template.
        prefix_tokens: number of leading tokens used to route a line (tree depth - 2).
        max_children: fan-out limit of a tree node; beyond it new tokens route via ``<*>``.
        strict_kv: require ``key=word`` tokens to match exactly (see module docstring).
        kv_max_values: once the candidate templates hold this many values of one
            ``key=word`` position, that key is treated as free text again.
        relaxed_search: on a miss, also search templates under the same first token.
        relaxed_threshold: similarity needed for a match found by the relaxed search.
        cache_size: bound of each message memo (cleared when full; 0 disables them).
        masker: custom :class:`~tasks.logs.masking.Masker` (not part of the saved state:
            pass the same one to :meth:`from_state`).
    """

    def __init__(
        self,
        *,
        sim_threshold: float = 0.6,
        prefix_tokens: int = 2,
        max_children: int = 100,
        strict_kv: bool = True,
        kv_max_values: int = 12,
        relaxed_search: bool = True,
        relaxed_threshold: float = 0.7,
        cache_size: int = 100_000,
        masker: Masker | None = None,
    ) -> None:
        if not 0.0 <= sim_threshold <= 1.0:
            raise ValueError(f"sim_threshold must be in [0, 1], got {sim_threshold}")
        if prefix_tokens < 0 or max_children < 2:
            raise ValueError("prefix_tokens must be >= 0 and max_children >= 2")
        self.sim_threshold = sim_threshold
        self.prefix_tokens = prefix_tokens
        self.max_children = max_children
        self.strict_kv = strict_kv
        self.kv_max_values = kv_max_values
        self.relaxed_search = relaxed_search
        self.relaxed_threshold = relaxed_threshold
        self.cache_size = cache_size
        self._masker = masker or Masker()
        self._templates: dict[int, Template] = {}
        # Routing tree: nested dicts keyed by token count, then the first prefix tokens.
        self._root: dict[str, Any] = {}
        # Per group (token count, first routing key): template ids, and an inverted index
        # (position, token) -> ids used to find candidate templates without a full scan.
        self._groups: dict[tuple[str, ...], list[int]] = {}
        self._index: dict[tuple[str, ...], dict[tuple[int, str], set[int]]] = {}
        self._next_id = 1
        # Memos: masked message -> id and raw message -> id. Identical inputs always map to
        # the same template, so repeats skip masking and the tree walk.
        self._memo: dict[str, int] = {}
        self._raw_memo: dict[bytes, int] = {}

    # ------------------------------------------------------------------ public API
    def add(self, line: str) -> tuple[int, str]:
        """Learn from one message (header already split off); ``(template_id, text)`` now."""
        tpl = self._templates[self._add(line)]
        return tpl.id, tpl.text

    def add_batch(self, lines: Iterable[str]) -> list[tuple[int, str]]:
        """Learn from many lines in order; return ``(id, text)`` per line.

        The texts are the templates as they stand *after* the whole batch (a template can
        generalise while the batch runs), which is what an ingest writes to its table.
        """
        ids = [self._add(line) for line in lines]
        texts = {tid: self._templates[tid].text for tid in set(ids)}
        return [(tid, texts[tid]) for tid in ids]

    def match(self, line: str) -> tuple[int, str] | None:
        """Find the template a line belongs to without learning from it (None if no match)."""
        tokens = self.tokenize(line)
        tid = self._memo.get(" ".join(tokens))
        if tid is None:
            tpl = self._search(tokens)
            if tpl is None:
                return None
            tid = tpl.id
        tpl = self._templates[tid]
        return tpl.id, tpl.text

    @staticmethod
    def message_of(message: str) -> str:
        """What is mined of a message: its text without surrounding blanks."""
        if not isinstance(message, str):
            message = "" if message is None else str(message)
        return message.strip()

    def tokenize(self, message: str) -> list[str]:
        """Mask and tokenize a message as the miner sees it."""
        return self._tokens(self.message_of(message))

    def _tokens(self, message: str) -> list[str]:
        return self._masker.mask(message).split()

    def get(self, template_id: int) -> Template | None:
        """Return the template with this id (None if unknown)."""
        return self._templates.get(template_id)

    def templates(self) -> Iterator[Template]:
        """Iterate templates in id order."""
        return iter(sorted(self._templates.values(), key=lambda t: t.id))

    def __len__(self) -> int:
        return len(self._templates)

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """The constructor parameters that shape mining (saved with the state)."""
        return {
            "sim_threshold": self.sim_threshold,
            "prefix_tokens": self.prefix_tokens,
            "max_children": self.max_children,
            "strict_kv": self.strict_kv,
            "kv_max_values": self.kv_max_values,
            "relaxed_search": self.relaxed_search,
            "relaxed_threshold": self.relaxed_threshold,
        }

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable snapshot: config, next id, and every template with its route."""
        return {
            "version": STATE_VERSION,
            "config": self.config(),
            "next_id": self._next_id,
            "templates": [
                {"id": t.id, "tokens": list(t.tokens), "count": t.count, "route": list(t.route)}
                for t in self.templates()
            ],
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], *, masker: Masker | None = None, cache_size: int = 100_000
    ) -> TemplateMiner:
        """Rebuild a miner from :meth:`to_state` output; ids and routing are preserved."""
        version = state.get("version")
        if version != STATE_VERSION:
            raise ValueError(f"unsupported template miner state version {version!r}")
        config = {k: v for k, v in state["config"].items() if k != "split_headers"}
        miner = cls(**config, masker=masker, cache_size=cache_size)
        for raw in state["templates"]:
            tpl = Template(
                id=int(raw["id"]),
                tokens=[str(t) for t in raw["tokens"]],
                count=int(raw["count"]),
                route=tuple(str(r) for r in raw["route"]),
            )
            miner._register(tpl)
        miner._next_id = max(int(state["next_id"]), max(miner._templates, default=0) + 1)
        return miner

    # ------------------------------------------------------------------ internals
    def _add(self, line: str) -> int:
        message = line.strip() if isinstance(line, str) else self.message_of(line)
        # Token signature: the message with every digit made "0". Lines that differ only
        # in their numbers share it, and after the first of them skip masking and the
        # tree (the masker replaces numbers anyway).
        shape = message.encode("utf-8", "surrogatepass").translate(_DIGITS_TO_ZERO)
        tid = self._raw_memo.get(shape)
        if tid is None:
            tokens = self._tokens(message)
            key = " ".join(tokens)
            tid = self._memo.get(key)
            if tid is None:
                tpl = self._search(tokens)
                if tpl is None:
                    tpl = self._create(tokens)
                else:
                    self._merge(tpl, tokens)
                tid = tpl.id
                self._remember(self._memo, key, tid)
            self._remember(self._raw_memo, shape, tid)
        self._templates[tid].count += 1
        return tid

    def _remember(self, memo: dict[Any, int], key: Any, tid: int) -> None:
        if self.cache_size > 0:
            if len(memo) >= self.cache_size:
                memo.clear()
            memo[key] = tid

    @staticmethod
    def _route_token(token: str) -> str:
        """Tokens that look variable share one branch, so they cannot split the tree."""
        if WILDCARD in token or _DIGIT.search(token):
            return WILDCARD
        return token

    def _walk(self, tokens: list[str]) -> tuple[tuple[str, ...], bool]:
        """Route a line down the tree: (route taken, whether it reached a leaf).

        At each level the line follows its own token if that branch exists, else the
        shared ``<*>`` branch, as in Drain; it stops where neither exists.
        """
        route = [str(len(tokens))]
        node = self._root.get(route[0])
        if node is None:
            return (), False
        for tok in tokens[: self.prefix_tokens]:
            key = self._route_token(tok)
            child = node.get(key)
            if child is None:
                key = WILDCARD
                child = node.get(key)
                if child is None:
                    return tuple(route), False
            route.append(key)
            node = child
        return tuple(route), True

    def _search(self, tokens: list[str]) -> Template | None:
        route, routed = self._walk(tokens)
        if not route:
            return None
        group = route[:2]
        if routed:
            ids = self._candidates(group, tokens, self.sim_threshold, route)
            found = self._best(ids, tokens, self.sim_threshold)
            if found is not None:
                return found
        if not self.relaxed_search or len(route) < 2 or (routed and len(route) == 2):
            return None
        # Drain's blind spot: a variable word in the 2nd..nth token ("User alice logged
        # out") opens a new branch per value. On a miss, look at every template under the
        # same first token before creating a new one (repeats then hit the memo). The line
        # already disagrees with those templates in a routing position, so the bar is
        # higher there: it keeps "cupsd startup succeeded" and "... shutdown ..." apart.
        bar = max(self.sim_threshold, self.relaxed_threshold)
        return self._best(self._candidates(group, tokens, bar, None), tokens, bar)

    def _candidates(
        self,
        group: tuple[str, ...],
        tokens: list[str],
        bar: float,
        route: tuple[str, ...] | None,
    ) -> list[int]:
        """Ids (ascending) of templates in ``group`` that share enough tokens to reach ``bar``.

        The inverted index turns "compare with every template of the leaf" into a count
        over the few templates that share a token at the same position, so a leaf with
        thousands of templates (free text, overflowing branches) stays cheap. ``route``
        restricts the result to one leaf.
        """
        index = self._index.get(group)
        if index is None:
            return []
        n = len(tokens)
        need = math.ceil(bar * n - 1e-9)  # positions that must hold the same token
        if need <= 0:  # a zero bar admits templates sharing no token at all
            pool: Iterable[int] = self._groups.get(group, ())
        else:
            # Pigeonhole: a template equal in `need` of n positions appears in at least one
            # of any n - need + 1 postings, so the union of the smallest ones is enough.
            postings = sorted((index.get(key, ()) for key in enumerate(tokens)), key=len)
            pool = set().union(*postings[: n - need + 1])
        templates = self._templates
        ids = []
        for tid in pool:
            tpl = templates[tid]
            if route is not None and tpl.route != route:
                continue
            if need > 0 and sum(t == s for t, s in zip(tpl.tokens, tokens, strict=True)) < need:
                continue
            ids.append(tid)
        ids.sort()
        return ids

    def _best(self, ids: list[int], tokens: list[str], bar: float) -> Template | None:
        """Most similar template among ``ids``, or None below ``bar``.

        Similarity is the share of positions where template and line hold the same token
        (two masked ``<*>`` count as the same); positions the template has generalised to
        ``<*>`` do not count, as in Drain, but break ties (prefer the more general one);
        remaining ties go to the oldest template.
        """
        best: Template | None = None
        best_sim = -1.0
        best_params = -1
        n = len(tokens) or 1
        for tid in ids:
            tpl = self._templates[tid]
            same = params = 0
            for i, (t, s) in enumerate(zip(tpl.tokens, tokens, strict=True)):
                if t == s:
                    same += 1
                elif t == WILDCARD or (t.endswith(_KV_WILDCARD) and s.startswith(t[:-3])):
                    params += 1
                elif self.strict_kv and self._kv_conflict(t, s, i, ids):
                    break
            else:
                sim = same / n
                if sim > best_sim or (sim == best_sim and params > best_params):
                    best, best_sim, best_params = tpl, sim, params
        if best is not None and best_sim >= bar:
            return best
        return None

    def _kv_conflict(self, t: str, s: str, pos: int, ids: list[int]) -> bool:
        """True if ``t`` is a ``key=word`` token that ``s`` may not be merged into."""
        if not _CATEGORICAL_KV.fullmatch(t):
            return False
        prefix = t[: t.index("=") + 1]
        if not s.startswith(prefix):
            return True
        values = {
            tok for tok in (self._templates[i].tokens[pos] for i in ids) if tok.startswith(prefix)
        }
        return len(values) < self.kv_max_values

    def _create(self, tokens: list[str]) -> Template:
        route = [str(len(tokens))]
        node = self._root.setdefault(route[0], {})
        for tok in tokens[: self.prefix_tokens]:
            key = self._route_token(tok)
            # Keep one slot for the shared wildcard branch.
            if key not in node and key != WILDCARD and len(node) >= self.max_children - 1:
                key = WILDCARD
            route.append(key)
            node = node.setdefault(key, {})
        tpl = Template(id=self._next_id, tokens=list(tokens), count=0, route=tuple(route))
        self._next_id += 1
        self._register(tpl)
        return tpl

    def _register(self, tpl: Template) -> None:
        """Add a template to the id map, the tree and the inverted index of its group."""
        self._templates[tpl.id] = tpl
        node = self._root
        for step in tpl.route:
            node = node.setdefault(step, {})
        group = tpl.route[:2]
        self._groups.setdefault(group, []).append(tpl.id)
        index = self._index.setdefault(group, {})
        for posting in enumerate(tpl.tokens):
            index.setdefault(posting, set()).add(tpl.id)

    def _merge(self, tpl: Template, tokens: list[str]) -> None:
        index = self._index[tpl.route[:2]]
        cur = tpl.tokens
        for i, (t, s) in enumerate(zip(cur, tokens, strict=True)):
            if t in (s, WILDCARD):
                continue
            eq = t.find("=")
            if eq > 0 and s.startswith(t[: eq + 1]) and _KV_KEY.fullmatch(t, 0, eq):
                new = t[: eq + 1] + WILDCARD  # "user=alice" + "user=bob" -> "user=<*>"
            else:
                new = WILDCARD
            index[(i, t)].discard(tpl.id)
            index.setdefault((i, new), set()).add(tpl.id)
            cur[i] = new
