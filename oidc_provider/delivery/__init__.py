"""Reaching a person: email over SMTP, text messages and voice calls through an HTTP gateway.

Factors (email, SMS and voice OTP, magic links) call `op.delivery`; they never talk to
SMTP or a gateway themselves, so a deployment changes providers in provider.yaml only.
`op.delivery` queues each message and returns: background threads of any worker sharing the
store send it (`Delivery`, background.py).
In dev_mode every message is also kept in the `outbox_messages` table (`oidc-provider
outbox`, /dev/outbox), so development needs no mail server or SMS account.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ..background import BackgroundQueue
from ..errors import outage_errors
from ..observability import DELIVERIES, request_id as current_request_id

if TYPE_CHECKING:
    from .email import RenderedEmail

log = logging.getLogger("oidc_provider.delivery")

EMAIL_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+")
PHONE_NUMBER = re.compile(r"\+[1-9][0-9]{1,14}")  # E.164


class DeliveryError(Exception):
    """Sending failed; str() is safe to log, never shown raw to users. `permanent`: the server
    refused for good (an SMTP 5xx, a gateway's 4xx), so trying again cannot help."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def spell_digits(code: str) -> str:
    """'123456' -> '1 2 3 4 5 6': a speech engine then reads a code digit by digit."""
    return " ".join(code.replace(" ", ""))


def mask(to: str) -> str:
    """Enough of an address or number to follow a message in the logs, not to harvest it."""
    if "@" in to:
        local, _, domain = to.rpartition("@")
        return f"{local[:1]}***@{domain}"
    return f"{to[:3]}***{to[-2:]}" if len(to) > 6 else "***"


@dataclass
class Message:
    """An email (its rendered parts in `email`), a text message or a call, waiting to be sent."""

    channel: str  # email, sms, voice
    to: str
    body: str  # an email's text part; the words of a text or call
    email: RenderedEmail | None = None
    attempts: int = 0
    queued_at: float = field(default_factory=time.time)  # when it was asked for: the dev outbox's order
    request_id: str | None = field(default_factory=current_request_id)  # the asking request's, for the logs

    def encode(self) -> dict:
        return asdict(self)

    @classmethod
    def decode(cls, data: dict) -> Message:
        from .email import RenderedEmail

        return cls(**{**data, "email": RenderedEmail(**data["email"]) if data["email"] else None})

    @property
    def subject(self) -> str | None:
        return self.email.subject if self.email else None

    def __str__(self) -> str:  # enough to follow a message in the logs, never its content
        return f"{self.channel} to {mask(self.to)}"


class Delivery:
    """One per app, built from the `email:`, `sms:`, `voice:` and `delivery:` settings.

    `send_*` check the recipient, render the message in the request (its language) and queue
    it: the request answers at once, and background threads send it, with the transport's
    timeout per try and `delivery.attempts` tries with backoff (ASVS 5.0 6.3.8: a known
    account's answer does not wait for the SMTP server or gateway that an unknown one never
    reaches). Only a message that can go nowhere (no transport, and no dev outbox) or that the
    store cannot keep (unreachable) raises DeliveryError at once; a failed send is logged and
    counted (oidc_deliveries), and the person sends a new code. In dev_mode every message is
    also kept in the dev outbox.
    """

    def __init__(self, settings, base_dir=None):
        from .email import EmailTemplates, SmtpMailer
        from .gateways import build_gateway

        self.keep_copies = settings.dev_mode
        self.settings = settings.delivery
        self.templates = EmailTemplates()
        self.mailer = SmtpMailer(settings.email, base_dir) if settings.email.host else None
        self.gateways = {"sms": build_gateway(settings.sms), "voice": build_gateway(settings.voice)}
        self.queue = None

    def init_app(self, app) -> None:
        self.queue = BackgroundQueue(app, "delivery", self.settings.workers, self._work, Message.encode, Message.decode)

    def transport(self, channel: str):
        """The SMTP mailer or the channel's gateway; None when none is configured."""
        return self.mailer if channel == "email" else self.gateways[channel]

    def available(self, channel: str) -> bool:
        """Whether a message on this channel ("email", "sms", "voice") can go anywhere."""
        return self.transport(channel) is not None or self.keep_copies

    def send_email(self, to: str, template: str, context: dict) -> None:
        """Render templates/email/<template>/ with context; it is sent as text + HTML."""
        self._queue(self.email(to, template, context))

    def send_sms(self, to: str, text: str) -> None:
        self._queue(self.text("sms", to, text))

    def send_voice(self, to: str, text: str) -> None:
        """The gateway calls `to` and reads `text` out; write codes with spell_digits()."""
        self._queue(self.text("voice", to, text))

    def email(self, to: str, template: str, context: dict) -> Message:
        if not EMAIL_ADDRESS.fullmatch(to or ""):
            raise self._failed("email not sent: the recipient is not an email address")
        email = self.templates.render(template, context)
        return Message("email", to, email.text, email)

    def text(self, channel: str, to: str, text: str) -> Message:
        if not PHONE_NUMBER.fullmatch(to or ""):
            raise self._failed(f"{channel} not sent: the recipient is not an E.164 phone number")
        return Message(channel, to, text)

    def attempt(self, message: Message) -> None:
        """One try over the channel's transport; DeliveryError when it fails."""
        if message.channel == "email":
            self.mailer.send(message.to, message.email)
        else:
            self.gateways[message.channel].send(message.channel, message.to, message.body)

    def _queue(self, message: Message) -> None:
        if not self.available(message.channel):
            raise self._failed(f"{message} not sent: no {message.channel} transport is configured")
        try:
            self.queue.submit(message)
        except outage_errors() as exc:  # the store keeps the queue: a change already made stays made
            raise self._failed(f"{message} not sent: the store did not take it ({exc.__class__.__name__})") from exc

    def _work(self, message: Message) -> float | None:
        """The queue's job: the dev copy first (it must exist even when sending then fails), then
        one try; returns the seconds before the next try, or None when done."""
        from ..models import keep_in_outbox

        transport = self.transport(message.channel)
        traced = {"request_id": message.request_id}
        if self.keep_copies and not message.attempts:
            keep_in_outbox(message.channel, message.to, message.subject, message.body, message.queued_at)
        if transport is None:
            log.info("%s kept in the dev outbox only: no %s transport is configured", message, message.channel,
                     extra=traced)
            return None
        message.attempts += 1
        try:
            self.attempt(message)
        except DeliveryError as exc:
            retry = not exc.permanent and message.attempts < self.settings.attempts
            outcome = "retry" if retry else "failed"
            DELIVERIES.labels(message.channel, outcome).inc()
            log.warning("%s via %s failed (try %d of %d%s): %s", message, transport.name, message.attempts,
                        self.settings.attempts, ", tried again" if retry else "", exc,
                        extra={**traced, "delivery": {
                            "channel": message.channel, "to": mask(message.to), "transport": transport.name,
                            "attempt": message.attempts, "outcome": outcome, "error": str(exc)}})
            return self.settings.backoff * 2 ** (message.attempts - 1) if retry else None
        DELIVERIES.labels(message.channel, "sent").inc()
        kept = " (and kept in the dev outbox)" if self.keep_copies else ""
        log.info("%s sent via %s%s", message, transport.name, kept, extra=traced)
        return None

    @staticmethod
    def _failed(message: str) -> DeliveryError:
        log.warning("%s", message)
        return DeliveryError(message)


__all__ = ["Delivery", "DeliveryError", "Message", "spell_digits"]
