"""SMS OTP (`sms`): a code sent by text message to the user's verified phone number."""

from ...i18n import lazy_gettext as _l
from .codes import CodeFactor, ToVerifiedPhone


class SmsOtpFactor(ToVerifiedPhone, CodeFactor):
    id = "sms"
    amr = "sms"
    flow = "phone"  # SMS and voice reach the same phone: together they are not MFA
    label = _l("Text me a code")

    def deliver(self, destination, secret, context):
        self.delivery.send_sms(destination, f"{secret} is your sign-in code. It expires in {self.minutes} "
                                            "minutes. Never share it.")
