"""The shared shape of factors that send a one-time secret (a code or a link) to a
verified contact point; each subclass names the contact point and how it is sent."""

from __future__ import annotations

from ..otp import OneTimeSecrets, mask_email, mask_phone
from . import Verification


class CodeFactor:
    kind = "code"  # the page asks for a code ("link": the user follows a link)
    response_field = "code"
    max_response = 32
    failure_message = "code_failed"
    usernameless = False
    first_factor = True
    id: str
    amr: str
    flow: str

    def __init__(self, op):
        self.otp: OneTimeSecrets = op.otp
        self.delivery = op.delivery
        self.settings = op.settings

    def destination(self, user) -> str | None:
        """The verified address or number the code goes to; None when there is none."""
        raise NotImplementedError

    def mask(self, destination: str) -> str:
        raise NotImplementedError

    def deliver(self, destination: str, secret: str, context: dict) -> None:
        raise NotImplementedError

    def new_secret(self) -> str:
        return self.otp.new_code()

    @property
    def lifetime(self) -> int:
        return self.settings.otp.lifetime

    def available_for(self, user) -> bool:
        return bool(user and not user.disabled and self.destination(user))

    def begin(self, user, context) -> dict:
        """Send a code. For an account that cannot use the factor nothing is sent, but the
        answer looks the same (no enumeration); DeliveryError and SendRefused propagate."""
        destination = self.destination(user) if self.available_for(user) else None
        binding = context["binding"]
        self.otp.check_send_allowed(factor=self.id, binding=binding, user_id=user.id if user else None,
                                    destination=destination, ip=context.get("ip"))
        if destination is None:
            return {"challenge": None}
        issued = self.otp.issue(factor=self.id, binding=binding, user_id=user.id, destination=destination,
                                secret=self.new_secret(), lifetime=self.lifetime)
        try:
            self.deliver(destination, issued.secret, context)
        except Exception:
            self.otp.undo_send(issued, factor=self.id, binding=binding)
            raise
        return {"challenge": issued.challenge, "sent_to": self.mask(destination)}

    def verify(self, user, response, context) -> Verification:
        return self.otp.verify(context.get("challenge"), factor=self.id, binding=context["binding"],
                               user_id=user.id if user else None,
                               secret=str(response.get(self.response_field) or ""))

    @property
    def minutes(self) -> int:
        return max(1, self.lifetime // 60)


class ToVerifiedEmail:
    """The code or link goes to the verified primary email address."""

    def destination(self, user):
        return user.email if user.email and user.email_verified else None

    def mask(self, destination):
        return mask_email(destination)


class ToVerifiedPhone:
    """The code goes to the verified phone number (text or call)."""

    def destination(self, user):
        return user.phone_number if user.phone_number and user.phone_number_verified else None

    def mask(self, destination):
        return mask_phone(destination)
