"""Email magic link (`email`): a single-use link to the verified primary email address.

The link opens a page; only its button (a POST) completes the factor, because mail
scanners fetch links. The token is opaque, hashed at rest and bound to the login that
asked for it: confirming it in another browser completes that original login (which
continues by itself), and never signs the other browser in.
"""

from __future__ import annotations

from ...i18n import lazy_gettext as _l
from .codes import CodeFactor, ToVerifiedEmail


class MagicLinkFactor(ToVerifiedEmail, CodeFactor):
    kind = "link"
    response_field = "token"
    id = "email"
    amr = "eml"
    flow = "email"

    label = _l("Email me a sign-in link")

    def __init__(self, op):
        super().__init__(op)
        self.issuer = op.settings.issuer_url

    def new_secret(self):
        return self.otp.new_link_token()

    @property
    def lifetime(self):
        return self.settings.otp.link_lifetime

    def deliver(self, destination, secret, context):
        # the sign-in pages' landing, or the direct API's when it asked (context["link_url"])
        url = context.get("link_url", f"{self.issuer}/interaction/link/{{token}}").format(token=secret)
        self.delivery.send_email(destination, "magic_link", {"url": url, "minutes": self.minutes})
