"""The notifier a flow uses: the configured webhook (or a Prefect Secret block), else none."""

from __future__ import annotations

import logging

from flows.config import SelfHealConfig
from tasks.notify import Notifier, NullNotifier, make_notifier

log = logging.getLogger("selfheal.notify")


def notifier_for(config: SelfHealConfig) -> Notifier:
    """Never raises: a webhook that cannot be resolved is logged (without the URL) and
    notifications are dropped, since a notification must never fail a recovery."""
    try:
        return make_notifier(config.notification_webhook)
    except ValueError as exc:
        log.error("notifications disabled: %s", exc)
        return NullNotifier()
