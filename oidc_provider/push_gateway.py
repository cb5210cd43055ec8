"""Telling a push device that a sign-in waits for its answer: a pluggable gateway.

The notification is only a wake-up call. It carries what the person needs to decide
(which application, from which IP address and place) but not the challenge's nonce:
the device fetches that with a request signed by its own key (views/push.py), so
whoever relays the notification (the operator's webhook, a mobile push service) can
neither answer nor replay anything.

Gateways, chosen by the `push: gateway:` setting:
- `none`: nothing is sent; devices poll `GET /push/devices/<id>/challenges`.
- `webhook`: one JSON POST per device, to a URL of the operator's choosing, with the
  `push: token:` as a bearer token; anything but a 2xx answer is a DeliveryError.
"""

from __future__ import annotations

import logging

from .delivery import DeliveryError
from .delivery.gateways import post

log = logging.getLogger("oidc_provider.push")


class NoPushGateway:
    """`gateway: none`: devices find their challenges by polling."""

    name = "none"

    def notify(self, notification: dict) -> None:
        return None


class WebhookPushGateway:
    """POSTs {device, push_token, challenge_id, client, ip, place, expires_at} as JSON."""

    name = "webhook"

    def __init__(self, settings):
        self.settings = settings

    def notify(self, notification: dict) -> None:
        headers = {"Authorization": f"Bearer {self.settings.token}"} if self.settings.token else {}
        answer = post(self.settings.url, self.settings.timeout, headers=headers, json=notification)
        if not 200 <= answer.status_code < 300:
            raise DeliveryError(f"HTTP {answer.status_code}")


def notify_devices(gateway, notifications: list[dict]) -> None:
    """Notify every device; a device that cannot be reached (an uninstalled app) does not stop
    the others, but when none could be reached the sign-in is told (DeliveryError)."""
    failures = []
    for notification in notifications:
        try:
            gateway.notify(notification)
        except DeliveryError as exc:
            log.warning("push notification to device %s via %s failed: %s", notification["device"],
                        gateway.name, exc)
            failures.append(exc)
    if notifications and len(failures) == len(notifications):
        raise DeliveryError(f"no device could be notified via {gateway.name}: {failures[0]}")


def build_push_gateway(settings) -> NoPushGateway | WebhookPushGateway:
    """The `push:` block's gateway."""
    if settings.gateway == "webhook":
        return WebhookPushGateway(settings)
    return NoPushGateway()
