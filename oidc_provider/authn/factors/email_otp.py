"""Email OTP (`email-otp`): a code sent to the user's verified primary email address."""

from ...i18n import gettext, lazy_gettext as _l
from .codes import CodeFactor, ToVerifiedEmail


class EmailOtpFactor(ToVerifiedEmail, CodeFactor):
    id = "email-otp"
    amr = "eml"
    flow = "email"  # an email link and an email code are one flow: together they are not MFA
    label = _l("Email me a code")

    def deliver(self, destination, secret, context):
        self.delivery.send_email(destination, "otp", {"code": secret, "minutes": self.minutes, "purpose": gettext("sign in")})
