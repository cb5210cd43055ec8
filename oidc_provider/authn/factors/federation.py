"""Sign-in at an upstream OpenID provider (social login): amr `fed`, its own flow.

The upstream authenticates the user; we only validate what it says (authn/upstream.py).
The factor is started from its own routes (views/federation.py: a button per upstream on
the login page, `urn:<ns>:<idp>_direct`, /v1/auth/social/<name>) and completed by the
callback, so the generic begin/verify steps of the sign-in pages never drive it.
"""

from __future__ import annotations

from ...i18n import gettext
from ..otp import SendRefused
from . import Verification


class UpstreamFactor:
    id = "fed"
    amr = "fed"  # Transmit and RFC 8176 alike
    flow = "federation"  # distinct from email and phone: a second factor after it is real MFA
    kind = "upstream"
    response_field = ""
    max_response = 0
    failure_message = "login_failed"
    usernameless = True  # the upstream names the user
    first_factor = True

    def __init__(self, op):
        self.settings = op.settings

    @property
    def label(self) -> str:
        names = [config.display_name or name for name, config in self.settings.upstreams.items()]
        return gettext("Continue with %(name)s", name=gettext(" or ").join(names) if names else gettext("another provider"))

    def available_for(self, user) -> bool:
        # Never offered as a step of the generic pages: each upstream has its own button.
        return False

    def begin(self, user, context):
        raise SendRefused("factor_not_allowed")

    def verify(self, user, response, context) -> Verification:
        return Verification(False, "an upstream sign-in completes at its callback only")
