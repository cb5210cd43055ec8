"""Voice OTP (`voice`): the same kind of code, read out by a voice gateway's call."""

from ...i18n import lazy_gettext as _l
from ...delivery import spell_digits
from .codes import CodeFactor, ToVerifiedPhone


class VoiceOtpFactor(ToVerifiedPhone, CodeFactor):
    id = "voice"
    amr = "tel"
    flow = "phone"
    label = _l("Call me with a code")

    def deliver(self, destination, secret, context):
        spoken = spell_digits(secret)
        self.delivery.send_voice(destination, f"Your sign-in code is {spoken}. Again, your code is {spoken}.")
