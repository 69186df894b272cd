"""Webhook notifications: tell people when self-healing needs them or has acted.

Plain domain code (no Prefect flow needed): build a :class:`Notification`, hand it to a
:class:`WebhookNotifier` (or a :class:`NullNotifier` when nothing is configured) and read
the :class:`DeliveryResult`. Two rules shape the design:

- **A notification never breaks a recovery.** ``send`` never raises; every failure,
  including bugs in this module, ends up in ``DeliveryResult.error`` and the log.
- **The webhook URL is a secret.** Chat webhooks carry their token in the path (Slack:
  ``/services/T…/B…/<token>``), in the query string (``?token=…``) or as ``user:password``.
  The URL therefore never appears in a log record, an exception message, a ``repr`` or a
  ``DeliveryResult``: only :func:`redact_webhook_url`'s ``scheme://host[:port]/…`` does.
  That includes httpx's own ``HTTP Request: POST <url>`` INFO line, which is scrubbed while
  a send is in progress.

When to notify (throttling, repeats) is decided by issue grouping, not here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import httpx

from tasks.severity import Severity

logger = logging.getLogger("selfheal.notify")

EVENTS = frozenset(
    {
        "approval_requested",
        "recovery_succeeded",
        "recovery_failed",
        "approval_expired",
        "issue_opened",
        "issue_resolved",
    }
)
ISSUE_KEYS = ("id", "component", "kind", "severity", "title")
SOURCE = "selfheal"
USER_AGENT = "selfheal-notify/1"
_REDACTED = "[redacted]"
# Shorter path segments / query values are words ("hooks", "api"), not tokens; scrubbing
# them from foreign text would only garble it.
_MIN_SECRET_PIECE = 6


# --------------------------------------------------------------------------- payload


@dataclass(frozen=True)
class Notification:
    """One thing worth telling a human, validated on construction.

    ``to_json()`` produces the webhook body. Its keys are stable (always present, ``null``
    when empty) so receivers can rely on them:

    - ``source``: always ``"selfheal"`` (lets one receiver serve several senders)
    - ``event``: one of :data:`EVENTS`
    - ``ts``: ISO 8601 UTC timestamp of the event, e.g. ``2024-05-01T12:00:00+00:00``
    - ``text``: a one-line human summary (chat webhooks such as Slack display ``text``)
    - ``issue``: ``{"id", "component", "kind", "severity", "title"}``; severity is the
      lower-case label (``"high"``)
    - ``proposed_action``, ``approval_id``, ``ui_url``: strings or ``null``
    - ``detail``: free-form object for event-specific facts (error, attempts, …)
    """

    event: str
    issue: Mapping[str, Any]
    proposed_action: str | None = None
    approval_id: str | None = None
    ui_url: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(
                f"unknown notification event {self.event!r} (expected one of "
                f"{', '.join(sorted(EVENTS))})"
            )
        if not isinstance(self.issue, Mapping):
            raise ValueError(f"issue must be a dict, not {type(self.issue).__name__}")
        missing = [k for k in ISSUE_KEYS if k not in self.issue]
        if missing:
            raise ValueError(f"issue lacks {', '.join(missing)} (needs {', '.join(ISSUE_KEYS)})")
        issue = dict(self.issue)
        issue["severity"] = Severity.parse(issue["severity"]).label
        object.__setattr__(self, "issue", issue)
        if not isinstance(self.detail, Mapping):
            raise ValueError(f"detail must be a dict, not {type(self.detail).__name__}")
        object.__setattr__(self, "detail", dict(self.detail))
        if not isinstance(self.ts, datetime):
            raise ValueError(f"ts must be a datetime, not {type(self.ts).__name__}")
        if self.ts.tzinfo is None or self.ts.utcoffset() is None:
            # A naive time is ambiguous (local? UTC?); guessing would mislabel the event.
            raise ValueError("ts must be timezone-aware (UTC)")
        object.__setattr__(self, "ts", self.ts.astimezone(UTC))

    def summary(self) -> str:
        """One line for humans, e.g. ``approval requested: api is down (high) — restart``."""
        text = f"[{SOURCE}] {self.event.replace('_', ' ')}: {self.issue['title']}"
        text += f" ({self.issue['severity']})"
        if self.proposed_action:
            text += f" — proposed: {self.proposed_action}"
        if self.ui_url:
            text += f" — {self.ui_url}"
        return text

    def payload(self) -> dict[str, Any]:
        """The body as a dict (see the class docstring for the keys)."""
        return {
            "source": SOURCE,
            "event": self.event,
            "ts": self.ts.isoformat(),
            "text": self.summary(),
            "issue": {k: self.issue[k] for k in ISSUE_KEYS},
            "proposed_action": self.proposed_action,
            "approval_id": self.approval_id,
            "ui_url": self.ui_url,
            "detail": dict(self.detail),
        }

    def to_json(self) -> str:
        """The webhook body. Values JSON cannot hold (datetimes, enums) become strings
        rather than failing: an odd ``detail`` value must not cost the notification."""
        return json.dumps(self.payload(), default=str, ensure_ascii=False)


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one ``send``. ``error`` is safe to log: it never holds the URL."""

    delivered: bool
    attempts: int
    status: int | None
    error: str | None


class Notifier(Protocol):
    """Anything with ``send``: lets callers treat a real and a null notifier alike."""

    def send(self, notification: Notification) -> DeliveryResult: ...


# --------------------------------------------------------------------------- redaction


def redact_webhook_url(url: str) -> str:
    """``scheme://host[:port]/…``: drops userinfo, path, query and fragment.

    Stricter than ``tasks.ingest.http.redact_url`` (which keeps the path) because webhook
    tokens usually live in the path.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    if ":" in host:
        host = f"[{host}]"
    if port:
        host += f":{port}"
    tail = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else "/"
    return f"{parts.scheme}://{host}{tail}"


def _split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without ``user:password@`` and the credentials (for HTTP basic auth)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


def _secret_replacements(url: str) -> list[tuple[str, str]]:
    """Fragments of ``url`` that may carry a token, each with what to put in its place.

    Covers the URL as given, without userinfo, and as httpx normalises it (percent-encoding
    may differ), plus the userinfo, path, query and their longer pieces.
    """
    redacted = redact_webhook_url(url)
    whole: set[str] = {url}
    pieces: set[str] = set()
    try:
        bare, creds = _split_userinfo(url)
        whole.add(bare)
        parts = urlsplit(url)
    except ValueError:
        return [(url, redacted)]
    try:
        hx = httpx.URL(bare)
        whole.add(str(hx))
        pieces.update({hx.path, hx.query.decode("ascii", "replace"), hx.raw_path.decode()})
    except Exception:  # noqa: BLE001 - an URL httpx rejects has no httpx form to scrub
        pass
    short_secrets: set[str] = set()
    if creds:
        # Credentials are secret whatever their length (but one letter is too common).
        short_secrets = {c for c in creds if len(c) >= 3}
        short_secrets.add(parts.netloc.rpartition("@")[0])
    pieces.update({parts.path, parts.query, parts.fragment, unquote(parts.path)})
    pieces.update(parts.path.split("/"))
    pieces.update(unquote(parts.path).split("/"))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        pieces.update({key, value})
    pieces.update(parts.query.split("&"))
    out = [(w, redacted) for w in whole if w]
    pieces = {p for p in pieces if len(p) >= _MIN_SECRET_PIECE} | short_secrets | {parts.path}
    out += [(p, _REDACTED) for p in pieces]
    out = [(frag, rep) for frag, rep in out if frag not in ("", "/")]
    # Longest first, so a whole URL is replaced before its pieces would garble it.
    return sorted(out, key=lambda fr: len(fr[0]), reverse=True)


def _scrub(text: str, replacements: list[tuple[str, str]]) -> str:
    for fragment, replacement in replacements:
        text = text.replace(fragment, replacement)
    return text


class _ScrubFilter(logging.Filter):
    """Rewrites foreign log records (httpx logs the full request URL at INFO)."""

    def __init__(self, replacements: list[tuple[str, str]]) -> None:
        super().__init__()
        self._replacements = replacements

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging system's problem
            return True
        clean = _scrub(message, self._replacements)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


@contextmanager
def _scrubbing(
    logger_names: tuple[str, ...], replacements: list[tuple[str, str]]
) -> Iterator[None]:
    """Attach the scrub filter only for the duration of one send (no lasting global change)."""
    filt = _ScrubFilter(replacements)
    loggers = [logging.getLogger(name) for name in logger_names]
    for lg in loggers:
        lg.addFilter(filt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(filt)


# --------------------------------------------------------------------------- delivery


def _retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse ``Retry-After`` (delta-seconds or an HTTP-date); ``None`` if absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass
class _Progress:
    """How far one send got, so even an unexpected failure reports its attempts."""

    attempts: int = 0
    status: int | None = None


class WebhookNotifier:
    """POSTs notifications as JSON to a webhook, retrying what a retry can fix.

    Retried: connection errors, timeouts, HTTP 5xx and 429. Not retried: other 4xx (the
    request itself is wrong; repeating it only spams the receiver) and 1xx/3xx (redirects
    are not followed, so a moved webhook is reported rather than silently chased).

    ``retries`` counts *re*-tries: at most ``retries + 1`` attempts. Before retry *n* the
    notifier waits ``d = min(backoff_cap, backoff_base * 2**(n-1))`` with "equal jitter"
    (uniformly in ``[d/2, d]``), so several notifiers failing together do not retry in
    lockstep yet the delay still grows. A 429/503 ``Retry-After`` replaces that delay,
    bounded by ``backoff_cap`` so a receiver cannot stall a recovery flow for an hour.

    ``sleep`` is injectable so tests (and async callers wrapping this in a thread) control
    waiting; ``client_factory`` returns an ``httpx.Client`` (for proxies, custom TLS, …),
    is called once per ``send`` and the client is closed afterwards. ``rng`` makes the
    jitter reproducible.

    Userinfo (``https://user:pass@host/…``) is sent as HTTP basic auth.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        client_factory: Callable[[], httpx.Client] | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except (ValueError, TypeError):
            raise ValueError("webhook URL cannot be parsed") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http(s)://host/…, got {redact_webhook_url(url)}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff_base < 0 or backoff_cap < 0:
            raise ValueError("backoff_base and backoff_cap must be >= 0")
        self._bare_url, self._auth = _split_userinfo(url)
        self._replacements = _secret_replacements(url)
        self.redacted_url = redact_webhook_url(url)
        self.timeout = timeout
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self._client_factory = client_factory or self._default_client
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.redacted_url!r}, retries={self.retries})"

    def _default_client(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout, follow_redirects=False)

    def backoff_delay(self, retry: int) -> float:
        """Jittered wait before retry number ``retry`` (1-based); within ``[d/2, d]``."""
        d = min(self.backoff_cap, self.backoff_base * 2 ** (retry - 1))
        return d / 2 + self._rng.uniform(0, d / 2)

    def send(self, notification: Notification) -> DeliveryResult:
        """Deliver one notification; never raises (the outcome is in the result)."""
        progress = _Progress()
        try:
            body = notification.to_json().encode()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                # Same body → same id: lets a receiver drop the duplicate a retry after a
                # timeout can cause (the first POST may have arrived after all).
                "X-Selfheal-Delivery": hashlib.sha256(body).hexdigest()[:32],
                "X-Selfheal-Event": notification.event,
            }
            with (
                _scrubbing(("httpx",), self._replacements),
                self._client_factory() as client,
            ):
                return self._deliver(client, body, headers, notification.event, progress)
        except Exception as exc:  # noqa: BLE001 - a webhook must never fail a recovery
            error = self._clean(f"unexpected {type(exc).__name__}: {exc}")
            logger.error("notification to %s failed: %s", self.redacted_url, error)
            return DeliveryResult(False, progress.attempts, progress.status, error)

    def _deliver(
        self,
        client: httpx.Client,
        body: bytes,
        headers: dict[str, str],
        event: str,
        progress: _Progress,
    ) -> DeliveryResult:
        max_attempts = self.retries + 1
        error: str | None = None
        for attempt in range(1, max_attempts + 1):
            progress.attempts = attempt
            progress.status = None
            logger.debug(
                "POST %s event=%s attempt %d/%d", self.redacted_url, event, attempt, max_attempts
            )
            retry_after: float | None = None
            try:
                resp = client.post(
                    self._bare_url,
                    content=body,
                    headers=headers,
                    auth=self._auth or httpx.USE_CLIENT_DEFAULT,
                    timeout=self.timeout,
                )
            except httpx.TimeoutException as exc:
                error = f"timed out after {self.timeout:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                error = self._clean(f"{type(exc).__name__}: {exc}") or type(exc).__name__
            else:
                status = progress.status = resp.status_code
                if 200 <= status < 300:
                    logger.info(
                        "notification %s delivered to %s (HTTP %d, attempt %d)",
                        event,
                        self.redacted_url,
                        status,
                        attempt,
                    )
                    return DeliveryResult(True, attempt, status, None)
                error = f"HTTP {status}"
                snippet = self._clean(resp.text.strip()[:200])
                if snippet:
                    error += f": {snippet}"
                if not (status == 429 or status >= 500):
                    logger.warning(
                        "notification %s rejected by %s: %s (not retried)",
                        event,
                        self.redacted_url,
                        error,
                    )
                    return DeliveryResult(False, attempt, status, error)
                if status in (429, 503):
                    retry_after = _retry_after_seconds(resp.headers.get("Retry-After"))
            if attempt == max_attempts:
                break
            if retry_after is not None:
                delay = min(self.backoff_cap, retry_after)
            else:
                delay = self.backoff_delay(attempt)
            logger.info(
                "notification %s to %s failed (%s); retry %d/%d in %.2f s",
                event,
                self.redacted_url,
                error,
                attempt,
                self.retries,
                delay,
            )
            self._sleep(delay)
        final = f"{error} (gave up after {max_attempts} attempt{'s' * (max_attempts > 1)})"
        logger.warning("notification %s to %s not delivered: %s", event, self.redacted_url, final)
        return DeliveryResult(False, max_attempts, progress.status, final)

    def _clean(self, text: str) -> str:
        return _scrub(text, self._replacements)


class NullNotifier:
    """Stands in when no webhook is configured: sends nothing, reports ``attempts=0``.

    ``error`` stays ``None`` because not being configured is a choice, not a failure.
    """

    def __repr__(self) -> str:
        return "NullNotifier()"

    def send(self, notification: Notification) -> DeliveryResult:
        logger.debug("no webhook configured; notification %s not sent", notification.event)
        return DeliveryResult(False, 0, None, None)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SecretSource:
    """Where ``<scheme><name>`` values are read: ``load(name)`` returns the stored string
    (raising ``ValueError`` that names the secret, never its value); ``label`` names the
    kind of store in errors."""

    scheme: str
    label: str
    load: Callable[[str], str]


def resolve_webhook_url(value: str | None, secrets: Sequence[SecretSource] = ()) -> str | None:
    """The webhook URL a configuration value stands for, or ``None`` when unset.

    ``value`` is a plain ``http(s)://`` URL or a reference ``<scheme><name>`` to one of the
    ``secrets`` sources, so the URL (a credential) can live in a secret store instead of a
    config file (the flows pass a Prefect Secret block source). Errors are ``ValueError``s
    that name the secret or the URL's redacted form, never the secret.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    source = next((s for s in secrets if value.startswith(s.scheme)), None)
    if source is not None:
        name = value[len(source.scheme) :].strip().strip("/")
        if not name:
            raise ValueError(f"{source.scheme}<name> reference lacks the {source.label} name")
        url = source.load(name)
        where = f"{source.label} {name!r}"
    else:
        url = value
        where = "webhook URL"
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        scheme = url.partition("://")[0] if "://" in url else ""
        refs = "".join(f" or {s.scheme}<name>" for s in secrets)
        raise ValueError(
            f"{where} is not an http(s) URL"
            + (f" (scheme {scheme!r})" if scheme and len(scheme) < 20 else "")
            + f"; expected http(s)://…{refs}"
        )
    return url


def make_notifier(
    value: str | None, secrets: Sequence[SecretSource] = (), **options: Any
) -> Notifier:
    """A :class:`WebhookNotifier` for a configured value, else a :class:`NullNotifier`."""
    url = resolve_webhook_url(value, secrets)
    return WebhookNotifier(url, **options) if url else NullNotifier()
