"""Reaching a person: email over SMTP, text messages and voice calls through an HTTP gateway.

Factors (email, SMS and voice OTP, magic links) call `op.delivery`; they never talk to
SMTP or a gateway themselves, so a deployment changes providers in provider.yaml only.
In dev_mode every message is also kept in the `outbox_messages` table (`oidc-provider
outbox`, /dev/outbox), so development needs no mail server or SMS account.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("oidc_provider.delivery")

EMAIL_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+")
PHONE_NUMBER = re.compile(r"\+[1-9][0-9]{1,14}")  # E.164


class DeliveryError(Exception):
    """Sending failed; str() is safe to log, never shown raw to users."""


def spell_digits(code: str) -> str:
    """'123456' -> '1 2 3 4 5 6': a speech engine then reads a code digit by digit."""
    return " ".join(code.replace(" ", ""))


def mask(to: str) -> str:
    """Enough of an address or number to follow a message in the logs, not to harvest it."""
    if "@" in to:
        local, _, domain = to.rpartition("@")
        return f"{local[:1]}***@{domain}"
    return f"{to[:3]}***{to[-2:]}" if len(to) > 6 else "***"


class Delivery:
    """One per app, built from the `email:`, `sms:` and `voice:` settings.

    Call it inside an app context (requests are one): dev_mode copies go to the database.
    A message with no configured transport is kept in the dev outbox, or in production
    raises DeliveryError, so nobody waits for a code that was never sent.
    """

    def __init__(self, settings, base_dir=None):
        from .email import EmailTemplates, SmtpMailer
        from .gateways import build_gateway

        self.keep_copies = settings.dev_mode
        self.templates = EmailTemplates()
        self.mailer = SmtpMailer(settings.email, base_dir) if settings.email.host else None
        self.gateways = {"sms": build_gateway(settings.sms), "voice": build_gateway(settings.voice)}

    def available(self, channel: str) -> bool:
        """Whether a message on this channel ("email", "sms", "voice") can go anywhere."""
        transport = self.mailer if channel == "email" else self.gateways[channel]
        return transport is not None or self.keep_copies

    def send_email(self, to: str, template: str, context: dict) -> None:
        """Render templates/email/<template>/ with context and send it as text + HTML."""
        if not EMAIL_ADDRESS.fullmatch(to or ""):
            raise self._failed("email not sent: the recipient is not an email address")
        email = self.templates.render(template, context)
        mailer = self.mailer
        self._deliver("email", to, email.subject, email.text, mailer, lambda: mailer.send(to, email))

    def send_sms(self, to: str, text: str) -> None:
        self._send_to_phone("sms", to, text)

    def send_voice(self, to: str, text: str) -> None:
        """The gateway calls `to` and reads `text` out; write codes with spell_digits()."""
        self._send_to_phone("voice", to, text)

    def _send_to_phone(self, channel: str, to: str, text: str) -> None:
        if not PHONE_NUMBER.fullmatch(to or ""):
            raise self._failed(f"{channel} not sent: the recipient is not an E.164 phone number")
        gateway = self.gateways[channel]
        self._deliver(channel, to, None, text, gateway, lambda: gateway.send(channel, to, text))

    def _deliver(self, channel, to, subject, body, transport, send) -> None:
        """Keep the dev copy first: it must exist even when the transport then fails."""
        from ..models import keep_in_outbox

        what = f"{channel} to {mask(to)}"
        if self.keep_copies:
            keep_in_outbox(channel, to, subject, body)
        if transport is None:
            if not self.keep_copies:
                raise self._failed(f"{what} not sent: no {channel} transport is configured")
            log.info("%s kept in the dev outbox only: no %s transport is configured", what, channel)
            return
        try:
            send()
        except DeliveryError as exc:
            raise self._failed(f"{what} via {transport.name} failed: {exc}") from None
        kept = " (and kept in the dev outbox)" if self.keep_copies else ""
        log.info("%s sent via %s%s", what, transport.name, kept)

    @staticmethod
    def _failed(message: str) -> DeliveryError:
        log.warning("%s", message)
        return DeliveryError(message)


__all__ = ["Delivery", "DeliveryError", "spell_digits"]
