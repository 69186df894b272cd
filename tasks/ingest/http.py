"""HTTP reads for ingestion, with errors that name the endpoint (and never its secrets)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx


class SourceUnavailable(Exception):
    """The source did not answer, or answered with an error; the message names it."""


def redact_url(url: str) -> str:
    """Drop user:password and the query string, which may carry tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def fetch_text(url: str, timeout: float, params: dict[str, str] | None = None) -> str:
    try:
        resp = httpx.get(url, params=params, timeout=timeout, follow_redirects=True)
    except httpx.TimeoutException:
        raise SourceUnavailable(f"{redact_url(url)} did not answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"{redact_url(url)} unreachable: {type(exc).__name__}") from None
    if resp.status_code >= 400:
        detail = _error_detail(resp.text)
        raise SourceUnavailable(
            f"{redact_url(url)} answered HTTP {resp.status_code}"
            + (f": {detail}" if detail else "")
        )
    return resp.text


def _error_detail(body: str) -> str:
    """The server's own explanation (Prometheus puts it in a JSON ``error`` field)."""
    import json

    try:
        payload = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])[:300]
    return body.strip()[:200]
