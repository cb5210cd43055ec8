"""The password grant and the MFA grants, as Auth0's MFA API has them.

- `password` (RFC 6749 4.3) and Auth0's `http://auth0.com/oauth/grant-type/password-realm`
  (with `realm`): only for clients that list `password` (or the realm URN) in grant_types.
  The password goes through the password factor under the account lockout; then the
  same policy as the browser sign-in decides (client, user and global MFA policy, rules;
  `acr_values` does not apply). A token for the MFA API's audience needs MFA when the user
  has an authenticator, as at Auth0. When more is needed the answer is Auth0's: HTTP 403
  {"error": "mfa_required", "error_description": "Multifactor authentication required",
  "mfa_token": "..."} (authn/mfa_tokens.py).
- `http://auth0.com/oauth/grant-type/mfa-otp` (mfa_token, otp), `.../mfa-oob` (mfa_token,
  oob_code, binding_code; `authorization_pending` while a push waits, `invalid_grant` on a
  denial) and `.../mfa-recovery-code` (mfa_token, recovery_code: the next unused one, the
  lowest number left; the answer carries a new `recovery_code` and its `recovery_code_number`).
  Each also under this provider's own URN,
  `urn:oidc-provider:params:oauth:grant-type:mfa-otp` etc. (settings/clients.py). The first
  code of an authenticator /mfa/associate started confirms it, as at Auth0; with a user's
  MFA API access token as `mfa_token` that is all these grants do (self-service enrollment).

Answers that complete the login are ordinary token responses (access token for the
requested `resource`/`audience`, ID token with `openid`, refresh token when the client
may refresh) whose acr and amr tell what was done; a login still short of its level gets
a new mfa_required. Every success and failure is audited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error, UnauthorizedClientError, grants

from ..authn import mfa_authenticators as api
from ..authn.acr import AcrRequestError, level_met, mfa_level
from ..authn.chain import next_choices
from ..authn.lockout import verify_counted
from ..authn.mfa_tokens import MALFORMED, MfaTokenError, MfaTokens
from ..authn.session import auth_context
from ..authn.signin import decision_level, policy_decision, record_signin
from ..models import User, record_audit
from ..settings.clients import MFA_GRANTS, PASSWORD_REALM
from ..settings.provider import mfa_resource
from .server import _Issuing, requested_resources
from .tokens import Issue

USERNAME_MAX = 320
ALL_MFA_GRANTS = tuple(name for names in MFA_GRANTS.values() for name in names)


class MfaRequiredError(OAuth2Error):
    """Auth0's answer when a login needs more factors: 403 with the mfa_token."""

    error = "mfa_required"
    status_code = 403

    def __init__(self, mfa_token: str):
        super().__init__(description="Multifactor authentication required")
        self.mfa_token = mfa_token

    def get_body(self):
        return [*super().get_body(), ("mfa_token", self.mfa_token)]


class Auth0Error(OAuth2Error):
    """An error code Authlib has no class for (expired_token, too_many_attempts,
    authorization_pending, access_denied...), with Auth0's wording and status."""

    def __init__(self, error: str, description: str, status_code: int = 400):
        super().__init__(description=description, status_code=status_code, error=error)


@dataclass
class Outcome:
    """What the token response is made of."""

    user: object
    done: list  # FactorUse, in the order done
    level: object  # the acr Level reached, or None
    scope: str
    resources: tuple[str, ...]
    sign_in: bool = True  # a login (ID and refresh tokens as usual); False: an enrollment confirmed
    recovery_code: bool = False  # hand back a new recovery code


class _MfaApiGrant(_Issuing, grants.BaseGrant, grants.TokenEndpointMixin):
    GRANT_TYPES: tuple[str, ...] = ()

    @classmethod
    def check_token_endpoint(cls, request):
        return request.payload.grant_type in cls.GRANT_TYPES and request.method in cls.TOKEN_ENDPOINT_HTTP_METHODS

    # -- the request -------------------------------------------------------------------------

    def _client(self):
        client = self.authenticate_token_endpoint_client()
        if not any(client.check_grant_type(name) for name in self.GRANT_TYPES):
            raise UnauthorizedClientError(f"The client may not use grant_type={self.request.payload.grant_type}")
        self.request.client = client
        return client

    def param(self, name: str, required: bool = True) -> str | None:
        values = self.request.payload.datalist.get(name) or []
        if len(values) > 1:
            raise InvalidRequestError(f"'{name}' is included more than once.")
        value = values[0] if values else None
        if value is None or value == "":
            if required:
                raise InvalidRequestError(f"Missing required parameter: {name}")
            return None
        if not isinstance(value, str):
            raise InvalidRequestError(f"'{name}' must be a string.")
        return value

    def ip(self) -> str | None:
        from flask import request

        return request.remote_addr

    def holder(self, client) -> api.Holder:
        """The login the mfa_token stands for (or, for confirming a self-service enrollment, the
        user's MFA API access token); it must be this client's."""
        try:
            holder = api.resolve_holder(self.op, self.param("mfa_token"), mfa_resource(self.op.settings))
        except MfaTokenError as exc:
            raise Auth0Error(exc.error, exc.description) from None
        if holder is None or holder.client_id != client.client_id or (
                holder.login is None and "enroll" not in holder.scopes):
            self._refused(holder, "the mfa_token is another client's or not an enroll token")
            raise Auth0Error(*MALFORMED)
        return holder

    def _refused(self, holder, reason: str, factor: str | None = None) -> None:
        record_audit("factor.failed", user_id=holder.user.id if holder else None,
                     client_id=self.request.client.client_id, ip=self.ip(), factor=factor, reason=reason,
                     via="mfa_api")

    def count_attempt(self, holder: api.Holder, factor_id: str) -> None:
        """One more answer with this mfa_token, counted before it is checked."""
        if not MfaTokens.of(self.op).count_attempt(holder.key):
            self._refused(holder, "too many attempts with this mfa_token", factor_id)
            raise Auth0Error("too_many_attempts", "Too many failed attempts; sign in again.", 429)

    def usable(self, holder: api.Holder, factor_id: str, description: str, as_user=None):
        """The factor, when enabled and able to move this login towards its level (`as_user`:
        the user as they will be once an enrollment is confirmed)."""
        factor = self.op.factors.get(factor_id)
        if factor is None or not api.counts_toward(self.op, holder.login, factor, as_user or holder.user):
            self._refused(holder, "factor not enabled, or not one that moves this login", factor_id)
            raise Auth0Error("invalid_grant", description)
        return factor

    def targets(self) -> tuple[str, ...]:
        """RFC 8707 `resource` values and Auth0's `audience`: the access token's audience."""
        values = list(self.request.payload.datalist.get("resource") or [])
        audience = self.param("audience", required=False)
        if audience:
            values.append(audience)
        return requested_resources(values, self.op.settings)

    # -- the outcome -------------------------------------------------------------------------

    def succeeded(self, holder: api.Holder, factor, recovery_code: bool = False) -> None:
        """A factor of this login passed: tokens when the login is complete, else mfa_required."""
        now = time.time()
        use = api.use_of(factor, now)
        record_audit("factor.succeeded", user_id=holder.user.id, client_id=holder.client_id, ip=self.ip(),
                     factor=factor.id, via="mfa_api")
        if holder.login is None:  # an access token confirmed its enrollment: what was done now, only
            claims = holder.claims
            resources = tuple(aud for aud in api.audiences(claims) if aud in self.op.settings.resources)
            self.request.outcome = Outcome(holder.user, [use], None, claims.get("scope") or "", resources,
                                           sign_in=False)
            return
        if not MfaTokens.of(self.op).finish(holder.login):  # a concurrent request used it first
            raise Auth0Error(*MALFORMED)
        login = holder.login
        self.conclude(holder.user, [*login.uses, use], api.level_of(self.op, login.level), login.scope,
                      tuple(login.resources), recovery_code)

    def conclude(self, user, done, level, scope: str, resources: tuple[str, ...], recovery_code: bool = False):
        """Tokens when `done` meets the level; otherwise a new mfa_token for what is missing."""
        op, client = self.op, self.request.client
        now = time.time()
        if level is not None and not level_met(level, done, now):
            if not any(client.check_grant_type(name) for name in ALL_MFA_GRANTS):
                raise Auth0Error("access_denied", "Multifactor authentication required, but this client may not "
                                 "use the MFA grant types.", 403)
            enabled = [op.factors.get(factor_id) for factor_id in api.API_FACTORS if op.factors.get(factor_id)]
            if not next_choices(level, enabled, done, user, now)[0]:
                raise Auth0Error("access_denied", "This sign-in needs a factor the MFA API does not offer.", 403)
            token = MfaTokens.of(op).issue(client_id=client.client_id, user_id=user.id, factors=done,
                                           level=level.value, scope=scope, resources=list(resources))
            record_audit("mfa.required", user_id=user.id, client_id=client.client_id, ip=self.ip(),
                         level=level.value, done=[use.factor for use in done])
            raise MfaRequiredError(token)
        self.request.outcome = Outcome(user, done, level, scope, resources, recovery_code=recovery_code)

    def create_token_response(self):
        outcome: Outcome = self.request.outcome
        op, client, user = self.op, self.request.client, outcome.user
        context = auth_context(op, outcome.done, None, outcome.level, time.time())
        token = op.tokens.issue(Issue(
            client=client, grant_type=self.request.payload.grant_type, sub=user.id, scope=outcome.scope,
            auth=context, resources=outcome.resources,
            include_refresh=outcome.sign_in and client.check_grant_type("refresh_token")))
        if outcome.sign_in and "openid" in outcome.scope.split():
            token["id_token"] = op.tokens.id_token(client, user.id, context, token["access_token"], None)
        if outcome.recovery_code:  # Auth0 hands back a new recovery code in place of the used one
            token["recovery_code_number"], token["recovery_code"] = op.factors.get("recovery-code").add_one(user)
        record_audit("token.issued", user_id=user.id, client_id=client.client_id, ip=self.ip(),
                     grant_type=self.request.payload.grant_type, acr=context.acr, amr=context.amr, via="mfa_api")
        if outcome.sign_in:
            record_signin(op, user, client, None, context.acr, None)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class PasswordGrant(_MfaApiGrant):
    """RFC 6749 4.3, and Auth0's password-realm grant (the realm names the user database)."""

    GRANT_TYPES = ("password", PASSWORD_REALM)

    def validate_token_request(self):
        client = self._client()
        op = self.op
        username, password = self.param("username"), self.param("password")
        if self.request.payload.grant_type == PASSWORD_REALM and self.param("realm") not in op.settings.mfa_api.realms:
            raise InvalidRequestError("Unknown realm.")
        scope = client.get_allowed_scope(self.param("scope", required=False) or "openid")
        resources = self.targets()
        factor = op.factors.get("password")
        if factor is None:
            raise UnauthorizedClientError("Password sign-in is not enabled.")
        user = User.find_by_login(username) if len(username) <= USERNAME_MAX else None
        result = verify_counted(op, factor, user, {"login": username[:USERNAME_MAX], "password": password[:1024]},
                                {"binding": f"mfa-api:{client.client_id}", "ip": self.ip()})
        if not result.ok or user is None or user.disabled:
            record_audit("factor.failed", user_id=user.id if user else None, client_id=client.client_id,
                         ip=self.ip(), factor="password", reason=result.reason, via="password_grant")
            raise Auth0Error("invalid_grant", "Wrong email or password.", 403)
        record_audit("factor.succeeded", user_id=user.id, client_id=client.client_id, ip=self.ip(),
                     factor="password", via="password_grant")
        self.conclude(user, [api.use_of(factor)], self.demanded_level(user, client, resources), scope, resources)

    def demanded_level(self, user, client, resources):
        """The policy's level, as for a browser sign-in (acr_values does not apply here); and
        MFA for a token to the MFA API when the user has an authenticator (Auth0's rule)."""
        op = self.op
        decision = policy_decision(op, user, client, self.ip())
        try:
            level = decision_level(op.levels, decision)
        except AcrRequestError:  # the policy asks for MFA that no level expresses: fail closed
            level, decision = None, None
        if decision is None or decision.action == "deny" or (decision.action == "require_acr" and level is None):
            record_audit("mfa.denied", user_id=user.id, client_id=client.client_id, ip=self.ip(), via="password_grant")
            raise Auth0Error("access_denied", "Sign-in refused by policy.", 403)
        if mfa_resource(op.settings) in resources and api.has_enrolled(op, user):
            try:
                floor = mfa_level(op.levels)
            except AcrRequestError:
                floor = None
            if floor is not None and (level is None or floor.rank > level.rank):
                level = floor
        return level


class MfaOtpGrant(_MfaApiGrant):
    """A code from the authenticator app; the first code of a new app confirms it."""

    GRANT_TYPES = MFA_GRANTS["mfa-otp"]

    def validate_token_request(self):
        client = self._client()
        holder = self.holder(client)
        otp = self.param("otp")[:32]
        factor = self.usable(holder, "totp", "Invalid otp_code.")
        self.count_attempt(holder, factor.id)
        enrollment = MfaTokens.of(self.op).enrollment(holder.key) or {}
        if enrollment.get("totp"):
            result = api.confirm_totp(self.op, holder, enrollment, otp)
        elif holder.login is not None:
            result = verify_counted(self.op, factor, holder.user, {"code": otp}, {"ip": self.ip()})
        else:
            result = api.Verification(False, "no enrollment to confirm with this access token")
        if not result.ok:
            self._refused(holder, result.reason, factor.id)
            raise Auth0Error("invalid_grant", "Invalid otp_code.")
        self.succeeded(holder, factor)


class MfaOobGrant(_MfaApiGrant):
    """An out-of-band challenge: a code sent by SMS, voice or email (binding_code), a push
    approval (polled), or the confirmation of an enrollment /mfa/associate started."""

    GRANT_TYPES = MFA_GRANTS["mfa-oob"]

    def validate_token_request(self):
        client = self._client()
        holder = self.holder(client)
        oob_code = self.param("oob_code")
        tokens = MfaTokens.of(self.op)
        record = tokens.oob(oob_code, holder.key)
        if record is None:
            self._refused(holder, "unknown oob_code, or another holder's")
            raise Auth0Error("invalid_grant", "Invalid oob_code.")
        kind = record["kind"]
        factor = self.usable(holder, record["factor"], "Invalid oob_code.",
                             as_user=api.enrolled_user(holder.user, record) if kind == "enroll-code" else None)
        if kind in ("push", "push-enroll"):
            result = self._push(holder, record, kind)
        else:
            binding_code = self.param("binding_code")[:32]
            self.count_attempt(holder, factor.id)
            if kind == "enroll-code":
                result = api.confirm_contact(self.op, holder, record, binding_code)
            else:
                context = {"binding": record["binding"], "challenge": record["challenge"], "ip": self.ip()}
                result = verify_counted(self.op, factor, holder.user, {"code": binding_code}, context)
            if not result.ok:
                self._refused(holder, result.reason, factor.id)
                raise Auth0Error("invalid_grant", "Invalid binding_code.")
        tokens.drop_oob(oob_code)
        self.succeeded(holder, factor)

    def _push(self, holder, record, kind):
        """A push approval or a device enrollment: pending until the device acts."""
        op = self.op
        if kind == "push-enroll":
            status = api.push_enrollment_status(op, holder.user, record)
            if status == "done":
                api.enrolled(op, holder, "push", MfaTokens.of(op).enrollment(holder.key) or {})
                return api.Verification(True)
            result = None if status == "pending" else api.Verification(False, "expired")
        else:
            result = op.factors.get("push").poll(record["pending"], {"binding": record["binding"], "ip": self.ip()})
        if result is None:
            raise Auth0Error("authorization_pending", "Authorization pending: please repeat the request in a few "
                                                      "seconds.")
        if not result.ok:
            MfaTokens.of(op).drop_oob(self.param("oob_code"))
            self._refused(holder, result.reason, "push")
            if result.reason == "expired":
                raise Auth0Error("expired_token", "The out-of-band challenge has expired.")
            raise Auth0Error("invalid_grant", "MFA Authorization rejected.")
        return result


class MfaRecoveryCodeGrant(_MfaApiGrant):
    """The next recovery code (the lowest number left); the answer carries a new one in its place
    (`recovery_code`, as Auth0's, numbered after the others: `recovery_code_number`)."""

    GRANT_TYPES = MFA_GRANTS["mfa-recovery-code"]

    def validate_token_request(self):
        client = self._client()
        holder = self.holder(client)
        if holder.login is None:  # nothing to confirm with a recovery code
            raise Auth0Error(*MALFORMED)
        code = self.param("recovery_code")[:32]
        factor = self.usable(holder, "recovery-code", "Invalid recovery_code.")
        self.count_attempt(holder, factor.id)
        result = verify_counted(self.op, factor, holder.user, {"code": code}, {"ip": self.ip()})
        if not result.ok:
            self._refused(holder, result.reason, factor.id)
            asked = factor.next_number(holder.user)  # only the next code is accepted (NIST 800-63B 5.1.2.2)
            raise Auth0Error("invalid_grant", "Invalid recovery_code." + (
                f" Use recovery code number {asked}." if asked is not None else ""))
        self.succeeded(holder, factor, recovery_code=True)


GRANTS = (PasswordGrant, MfaOtpGrant, MfaOobGrant, MfaRecoveryCodeGrant)
GRANT_TYPES = (*PasswordGrant.GRANT_TYPES, *ALL_MFA_GRANTS)  # for discovery
