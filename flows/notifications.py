"""The notifier a flow uses: the configured webhook (or a Prefect Secret block), else none."""

from __future__ import annotations

import logging
from typing import Any, cast

from flows.config import SelfHealConfig
from tasks.notify import Notifier, NullNotifier, SecretSource, make_notifier

log = logging.getLogger("selfheal.notify")


def notifier_for(config: SelfHealConfig) -> Notifier:
    """Never raises: a webhook that cannot be resolved is logged (without the URL) and
    notifications are dropped, since a notification must never fail a recovery."""
    try:
        return make_notifier(config.notification_webhook, secret_sources())
    except ValueError as exc:
        log.error("notifications disabled: %s", exc)
        return NullNotifier()


SECRET_SCHEME = "prefect-secret://"


def secret_sources() -> tuple[SecretSource, ...]:
    """``prefect-secret://<block-name>``: the webhook URL is read from a Secret block."""
    return (SecretSource(SECRET_SCHEME, "Prefect Secret block", load_prefect_secret),)


def load_prefect_secret(name: str) -> str:
    """The string held by Secret block ``name``; errors name the block, not its value."""
    from prefect.blocks.system import Secret

    try:
        # _sync=True: the plain call returns a coroutine when an event loop is running.
        block = cast("Secret[Any]", Secret.load(name, _sync=True))  # type: ignore[call-arg]
        value = block.get()
    except Exception as exc:  # noqa: BLE001 - any load failure is a configuration error
        text = str(exc)
        if "Unable to find" in text or type(exc).__name__ == "ObjectNotFound":
            reason = "does not exist"
        else:
            # Not str(exc): validation errors may quote the stored value.
            reason = f"could not be loaded ({type(exc).__name__})"
        raise ValueError(f"Prefect Secret block {name!r} {reason}") from None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"Prefect Secret block {name!r} must hold the webhook URL as a string, "
            f"not {type(value).__name__}"
        )
    return value.strip()
