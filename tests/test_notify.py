"""Webhook notifications against a real local HTTP receiver (no mocked HTTP)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from flows.demo.platform.launcher import free_port
from flows.notifications import secret_sources
from tasks.notify import (
    EVENTS,
    DeliveryResult,
    Notification,
    NullNotifier,
    WebhookNotifier,
    make_notifier,
    redact_webhook_url,
    resolve_webhook_url,
)
from tests.webhook_receiver import Reply, receiver


class SleepRecorder:
    """Injected as ``sleep``: records the requested delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def issue() -> dict:
    return {
        "id": 42,
        "component": "api",
        "kind": "down",
        "severity": "high",
        "title": "api is down",
    }


def note(event: str = "approval_requested", **kw: object) -> Notification:
    kw.setdefault("proposed_action", "restart api")
    kw.setdefault("approval_id", "appr-7")
    kw.setdefault("ui_url", "http://selfheal.local/approvals/appr-7")
    kw.setdefault("detail", {"ladder": ["restart", "reconfigure"]})
    return Notification(event, issue(), **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- payload


def test_receiver_gets_the_json_with_the_documented_fields() -> None:
    ts = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with receiver(Reply(200)) as rec:
        result = WebhookNotifier(f"{rec.base}/hook/abc123def").send(note(ts=ts))
    assert result == DeliveryResult(True, 1, 200, None)
    assert len(rec.requests) == 1
    got = rec.requests[0]
    assert got.path == "/hook/abc123def"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Selfheal-Event"] == "approval_requested"
    body = got.json()
    assert set(body) == {
        "source",
        "event",
        "ts",
        "text",
        "issue",
        "proposed_action",
        "approval_id",
        "ui_url",
        "detail",
    }
    assert body["source"] == "selfheal"
    assert body["event"] == "approval_requested"
    assert datetime.fromisoformat(body["ts"]) == ts
    assert body["issue"] == issue()
    assert body["proposed_action"] == "restart api"
    assert body["approval_id"] == "appr-7"
    assert body["ui_url"] == "http://selfheal.local/approvals/appr-7"
    assert body["detail"] == {"ladder": ["restart", "reconfigure"]}
    assert "api is down" in body["text"] and "restart api" in body["text"]


def test_notification_validates_and_normalises() -> None:
    with pytest.raises(ValueError, match="unknown notification event 'exploded'"):
        Notification("exploded", issue())
    with pytest.raises(ValueError, match="lacks severity, title"):
        Notification("issue_opened", {"id": 1, "component": "api", "kind": "down"})
    with pytest.raises(ValueError, match="severity"):
        Notification("issue_opened", {**issue(), "severity": "apocalyptic"})
    with pytest.raises(ValueError, match="timezone-aware"):
        Notification("issue_opened", issue(), ts=datetime(2024, 5, 1, 12, 0))

    cest = timezone(timedelta(hours=2))
    n = Notification(
        "recovery_failed",
        {**issue(), "severity": 4, "extra": "kept out of the body"},
        detail={"at": datetime(2024, 5, 1, tzinfo=UTC), "attempts": 3},
        ts=datetime(2024, 5, 1, 14, 0, tzinfo=cest),
    )
    body = json.loads(n.to_json())
    assert body["ts"] == "2024-05-01T12:00:00+00:00"
    assert body["issue"]["severity"] == "critical"
    assert "extra" not in body["issue"]
    assert body["detail"] == {"at": "2024-05-01 00:00:00+00:00", "attempts": 3}
    assert body["proposed_action"] is None and body["approval_id"] is None
    assert body["ui_url"] is None
    # Every documented event is accepted; the default timestamp is "now" in UTC.
    for event in EVENTS:
        assert Notification(event, issue()).ts.tzinfo is UTC


# --------------------------------------------------------------------------- retries


def test_500_twice_then_200_is_delivered_on_the_third_try_with_backoff() -> None:
    sleeps = SleepRecorder()
    with receiver(Reply(500), Reply(500), Reply(200)) as rec:
        notifier = WebhookNotifier(f"{rec.base}/hook", sleep=sleeps, backoff_base=0.5)
        result = notifier.send(note())
    assert len(rec.requests) == 3
    assert result.delivered is True
    assert result.attempts == 3
    assert result.status == 200
    assert result.error is None
    # Exponential with equal jitter: retry n waits within [d/2, d], d = 0.5 * 2**(n-1).
    assert len(sleeps.delays) == 2
    assert 0.25 <= sleeps.delays[0] <= 0.5
    assert 0.5 <= sleeps.delays[1] <= 1.0
    # Every attempt carries the same body and delivery id, so the receiver can dedupe.
    assert len({r.body for r in rec.requests}) == 1
    assert len({r.headers["X-Selfheal-Delivery"] for r in rec.requests}) == 1


def test_backoff_grows_exponentially_is_jittered_and_capped() -> None:
    notifier = WebhookNotifier("http://127.0.0.1:9/x", backoff_base=0.5, backoff_cap=8.0)
    for retry in range(1, 12):
        d = min(8.0, 0.5 * 2 ** (retry - 1))
        samples = [notifier.backoff_delay(retry) for _ in range(50)]
        assert all(d / 2 <= s <= d for s in samples)
        assert len(set(samples)) > 1  # jittered, not lockstep
    assert max(notifier.backoff_delay(30) for _ in range(50)) <= 8.0


def test_a_400_is_not_retried() -> None:
    sleeps = SleepRecorder()
    with receiver(Reply(400, body="missing field"), Reply(200)) as rec:
        result = WebhookNotifier(f"{rec.base}/hook", sleep=sleeps).send(note())
    assert len(rec.requests) == 1
    assert sleeps.delays == []
    assert result.delivered is False
    assert result.attempts == 1
    assert result.status == 400
    assert result.error == "HTTP 400: missing field"


def test_a_dead_receiver_fails_quietly_within_the_retry_budget() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    sleeps = SleepRecorder()
    notifier = WebhookNotifier(url, timeout=2.0, retries=3, backoff_cap=8.0, sleep=sleeps)
    started = time.monotonic()
    result = notifier.send(note())  # must not raise
    assert time.monotonic() - started < 4 * 2.0
    assert result.delivered is False
    assert result.attempts == 4  # 1 try + 3 retries
    assert result.status is None
    assert result.error and "ConnectError" in result.error and "gave up after 4" in result.error
    assert len(sleeps.delays) == 3
    assert all(0 < d <= 8.0 for d in sleeps.delays)


def test_a_timeout_is_retried() -> None:
    sleeps = SleepRecorder()
    with receiver(Reply(200, delay=1.5), Reply(200)) as rec:
        result = WebhookNotifier(f"{rec.base}/hook", timeout=0.3, sleep=sleeps).send(note())
    assert result.delivered is True
    assert result.attempts == 2
    assert len(rec.requests) == 2
    assert len(sleeps.delays) == 1


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        ("2", 2.0, 2.0),  # honoured exactly
        ("120", 8.0, 8.0),  # bounded by the cap
        (None, 0.25, 0.5),  # absent: the ordinary jittered backoff
        ("soon", 0.25, 0.5),  # unparsable: likewise
        ("HTTP-DATE+3", 1.0, 3.0),  # an HTTP-date three seconds ahead
    ],
)
def test_429_honours_retry_after(retry_after: str | None, low: float, high: float) -> None:
    if retry_after == "HTTP-DATE+3":
        retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    headers = {"Retry-After": retry_after} if retry_after else {}
    sleeps = SleepRecorder()
    with receiver(Reply(429, headers=headers, body="slow down"), Reply(200)) as rec:
        notifier = WebhookNotifier(f"{rec.base}/hook", backoff_cap=8.0, sleep=sleeps)
        result = notifier.send(note())
    assert result.delivered is True and result.attempts == 2
    assert len(rec.requests) == 2
    assert len(sleeps.delays) == 1
    assert low <= sleeps.delays[0] <= high


def test_send_never_raises_even_when_the_client_cannot_be_built() -> None:
    def broken_factory() -> httpx.Client:
        raise RuntimeError("proxy settings are broken")

    result = WebhookNotifier("http://127.0.0.1:9/x", client_factory=broken_factory).send(note())
    assert result.delivered is False
    assert result.attempts == 0
    assert result.error == "unexpected RuntimeError: proxy settings are broken"


def test_a_custom_client_factory_is_used_and_closed() -> None:
    clients: list[httpx.Client] = []

    def factory() -> httpx.Client:
        clients.append(httpx.Client(headers={"X-Tenant": "ops"}))
        return clients[-1]

    with receiver(Reply(204, body="")) as rec:
        result = WebhookNotifier(f"{rec.base}/hook", client_factory=factory).send(note())
    assert result == DeliveryResult(True, 1, 204, None)
    assert rec.requests[0].headers["X-Tenant"] == "ops"
    assert clients[0].is_closed


def test_null_notifier_and_make_notifier() -> None:
    assert NullNotifier().send(note()) == DeliveryResult(False, 0, None, None)
    assert isinstance(make_notifier(None), NullNotifier)
    assert isinstance(make_notifier("  "), NullNotifier)
    made = make_notifier("https://hooks.example.com/x", retries=1)
    assert isinstance(made, WebhookNotifier) and made.retries == 1


# --------------------------------------------------------------------------- secrecy

PATH_TOKEN = "T0KEN1/B0KEN2/pathsecretXYZ123"
QUERY_TOKEN = "s3cr3t"
USER, PASSWORD = "hookuser", "pw-hunter2"


def _leaks(text: str, full_url: str) -> list[str]:
    secrets = [full_url, QUERY_TOKEN, PASSWORD, "pathsecretXYZ123", PATH_TOKEN, f"{USER}:"]
    return [s for s in secrets if s in text]


def _record_texts(records: list[logging.LogRecord]) -> list[str]:
    out = []
    for r in records:
        out += [r.getMessage(), str(r.msg), repr(r.args), r.exc_text or ""]
    return out


@pytest.mark.parametrize("scenario", ["ok", "500-then-ok", "400-echo", "dead"])
def test_the_url_and_its_tokens_never_reach_logs_or_results(
    scenario: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    replies = {
        "ok": [Reply(200)],
        "500-then-ok": [Reply(500, body=f"upstream broke on token={QUERY_TOKEN}"), Reply(200)],
        # A receiver that echoes the request (path, query) back in its error body.
        "400-echo": [Reply(400, body=f"bad request /{PATH_TOKEN}?token={QUERY_TOKEN}")],
        "dead": [],
    }[scenario]
    httpx_filters_before = list(logging.getLogger("httpx").filters)
    with receiver(*replies) as rec:
        port = free_port() if scenario == "dead" else rec.port
        url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/{PATH_TOKEN}?token={QUERY_TOKEN}"
        notifier = WebhookNotifier(url, timeout=2.0, retries=2, sleep=SleepRecorder())
        result = notifier.send(note())

    assert result.delivered is (scenario in ("ok", "500-then-ok"))
    for text in [*_record_texts(caplog.records), repr(result), str(result.error), repr(notifier)]:
        assert _leaks(text, url) == [], text
    # Our own records name the endpoint in redacted form only.
    ours = [r.getMessage() for r in caplog.records if r.name == "selfheal.notify"]
    assert ours and all(f"http://127.0.0.1:{port}/…" in m for m in ours)
    assert logging.getLogger("httpx").filters == httpx_filters_before  # no lasting change
    if scenario in ("ok", "500-then-ok"):
        # httpx's own "HTTP Request: POST <url>" line was there, and was scrubbed.
        assert any(r.name == "httpx" and "HTTP Request" in r.getMessage() for r in caplog.records)
        # ...while the receiver got the real thing: token path, query and basic auth.
        got = rec.requests[-1]
        assert got.path == f"/{PATH_TOKEN}?token={QUERY_TOKEN}"
        expected_auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert got.headers["Authorization"] == f"Basic {expected_auth}"


def test_redact_webhook_url_drops_everything_that_may_hold_a_token() -> None:
    slack = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"
    assert redact_webhook_url(slack) == "https://hooks.slack.com/…"
    assert redact_webhook_url("http://u:p@example.com:8443/x?token=y#z") == (
        "http://example.com:8443/…"
    )
    assert redact_webhook_url("http://[::1]:9000/hook") == "http://[::1]:9000/…"
    assert redact_webhook_url("https://example.com") == "https://example.com/"
    assert redact_webhook_url("http://example.com:notaport/x") == "<unparsable url>"


def test_a_bad_url_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ValueError) as err:
        WebhookNotifier("ftp://user:s3cr3t@example.com/pathsecretXYZ123")
    assert "s3cr3t" not in str(err.value) and "pathsecretXYZ123" not in str(err.value)
    assert "ftp://example.com/…" in str(err.value)
    with pytest.raises(ValueError, match="cannot be parsed"):
        WebhookNotifier("http://example.com:99999999/s3cr3t")


# --------------------------------------------------------------------------- configuration


def test_resolve_plain_values() -> None:
    assert resolve_webhook_url(None) is None
    assert resolve_webhook_url("   ") is None
    url = "https://hooks.example.com/services/abc?token=s3cr3t"
    assert resolve_webhook_url(f"  {url} ") == url
    with pytest.raises(ValueError) as err:
        resolve_webhook_url("hooks.example.com/s3cr3t")
    assert "s3cr3t" not in str(err.value)
    with pytest.raises(ValueError, match="lacks the Prefect Secret block name"):
        resolve_webhook_url("prefect-secret://", secret_sources())


def test_resolve_a_prefect_secret_block(prefect_server: None) -> None:
    from prefect.blocks.system import Secret

    name = f"selfheal-webhook-{uuid.uuid4().hex[:8]}"
    url = "https://hooks.example.com/services/T1/B2/s3cr3tpathtoken"
    Secret(value=url).save(name, overwrite=True)  # type: ignore[arg-type]  # the validator wraps raw values
    assert resolve_webhook_url(f"prefect-secret://{name}", secret_sources()) == url

    # Also from code that runs inside an event loop (an async flow calling sync helpers).
    async def inside_loop() -> str | None:
        return resolve_webhook_url(f"prefect-secret://{name}", secret_sources())

    assert asyncio.run(inside_loop()) == url
    assert isinstance(make_notifier(f"prefect-secret://{name}", secret_sources()), WebhookNotifier)


def test_a_missing_secret_block_names_the_block(prefect_server: None) -> None:
    name = f"no-such-webhook-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match=f"Prefect Secret block '{name}' does not exist"):
        resolve_webhook_url(f"prefect-secret://{name}", secret_sources())


def test_a_secret_block_holding_a_non_url_does_not_reveal_it(prefect_server: None) -> None:
    from prefect.blocks.system import Secret

    odd = f"selfheal-odd-{uuid.uuid4().hex[:8]}"
    stored = {"webhook": "s3cr3t-in-a-dict"}
    Secret(value=stored).save(odd, overwrite=True)  # type: ignore[arg-type]  # the validator wraps raw values
    with pytest.raises(ValueError, match=f"block '{odd}' must hold the webhook URL") as err:
        resolve_webhook_url(f"prefect-secret://{odd}", secret_sources())
    assert "s3cr3t" not in str(err.value)

    wrong = f"selfheal-wrong-{uuid.uuid4().hex[:8]}"
    Secret(value="not a url s3cr3t").save(wrong, overwrite=True)  # type: ignore[arg-type]  # the validator wraps raw values
    with pytest.raises(ValueError, match=f"block '{wrong}' is not an http") as err:
        resolve_webhook_url(f"prefect-secret://{wrong}", secret_sources())
    assert "s3cr3t" not in str(err.value)
