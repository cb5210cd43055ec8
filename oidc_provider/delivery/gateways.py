"""HTTP gateways for text messages and voice calls: a generic webhook, or Twilio's API."""

from __future__ import annotations

from urllib.parse import quote
from xml.sax.saxutils import escape

import requests

from . import DeliveryError

TWILIO_API = "https://api.twilio.com"


def post(url: str, timeout: float, **kwargs) -> requests.Response:
    """POST once; redirects are not followed (a gateway that moves is misconfigured)."""
    try:
        return requests.post(url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.Timeout:
        raise DeliveryError(f"no answer within {timeout:g}s") from None
    except requests.RequestException as exc:  # only the class: a URL may hold a secret
        raise DeliveryError(f"could not reach the gateway ({type(exc).__name__})") from None


def refused(answer: requests.Response, detail: str = "") -> DeliveryError:
    """A non-2xx answer; a 4xx other than 408 and 429 is the gateway refusing for good."""
    status = answer.status_code
    return DeliveryError(f"HTTP {status}{detail}", permanent=400 <= status < 500 and status not in (408, 429))


class WebhookGateway:
    """POSTs {"channel", "to", "text"} as JSON to a URL of the operator's choosing."""

    name = "webhook"

    def __init__(self, settings):
        self.settings = settings

    def send(self, channel: str, to: str, text: str) -> None:
        headers = {"Authorization": f"Bearer {self.settings.token}"} if self.settings.token else {}
        answer = post(self.settings.url, self.settings.timeout, headers=headers,
                      json={"channel": channel, "to": to, "text": text})
        if not 200 <= answer.status_code < 300:
            raise refused(answer)


class TwilioGateway:
    """Twilio's REST API: Messages.json for texts, Calls.json with inline TwiML for calls."""

    name = "twilio"

    def __init__(self, settings):
        self.settings = settings
        base = (settings.url or TWILIO_API).rstrip("/")
        self.account_url = f"{base}/2010-04-01/Accounts/{quote(settings.account_sid, safe='')}"

    def send(self, channel: str, to: str, text: str) -> None:
        settings = self.settings
        if channel == "voice":
            twiml = f"<Response><Say>{escape(text)}</Say></Response>"  # the call reads the text out
            resource, fields = "Calls.json", {"Twiml": twiml}
        else:
            resource, fields = "Messages.json", {"Body": text}
        answer = post(f"{self.account_url}/{resource}", settings.timeout,
                      auth=(settings.account_sid, settings.auth_token),
                      data={"To": to, "From": settings.from_number, **fields})
        if not 200 <= answer.status_code < 300:
            raise refused(answer, _twilio_code(answer))


def _twilio_code(answer: requests.Response) -> str:
    """Twilio's numeric error code says what is wrong (21211: invalid 'To' number)."""
    try:
        code = answer.json().get("code")
    except (ValueError, AttributeError):
        return ""
    return f" (twilio error {code})" if isinstance(code, int) else ""


def build_gateway(settings) -> WebhookGateway | TwilioGateway | None:
    """The `sms:` or `voice:` block's gateway; None for `gateway: none`."""
    if settings.gateway == "webhook":
        return WebhookGateway(settings)
    if settings.gateway == "twilio":
        return TwilioGateway(settings)
    return None
