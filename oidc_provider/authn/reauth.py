"""Step-up before sensitive account changes, through the ordinary sign-in.

A change to how an account signs in (adding or removing a factor, new recovery codes, a new
email or phone) needs a *fresh* sign-in: one that an authorization request with
`max_age=account.reauth_max_age` would accept without prompting, at the `mfa` level when
the user can do MFA (so a user with a second factor re-passes it, not just the password).
Otherwise the browser makes exactly that request as the provider's own account client
(ACCOUNT_CLIENT_ID): the same interaction pages, policy, lockout and audit as for any
relying party (OIDC Core 3.1.2.1 `max_age`). The code comes back to
/account/security/reauth, is consumed there (this client can never use the token
endpoint), and the browser returns to the page it came from.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from urllib.parse import urlencode

from flask import redirect, request, url_for

from .. import i18n
from ..models import confirmed_authenticators, record_audit
from ..settings.clients import Client, ClientConfig
from .acr import AcrRequestError, mfa_level
from .chain import CONTACT_FLOWS, contact_gaps
from .interaction import login_needed

ACCOUNT_CLIENT_ID = "op:account"  # not a valid clients.yaml id, so no configured client can take it
CALLBACK_PATH = "/account/security/reauth"
PENDING = "reauth:{state}"
BACKUP_FACTORS = frozenset({"recovery-code"})  # for when the others are lost: not a factor to live by


class AccountClient(Client):
    """First party (no consent), public, PKCE; its codes are only ever consumed by the account
    page, so every token-endpoint grant and client authentication is refused."""

    def check_grant_type(self, grant_type: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return False


def account_client(settings) -> AccountClient:
    config = ClientConfig.model_construct(
        client_id=ACCOUNT_CLIENT_ID, client_name="your account settings", token_endpoint_auth_method="none",
        redirect_uris=[settings.issuer_url + CALLBACK_PATH], grant_types=["authorization_code"],
        scopes=["openid"], first_party=True,
    )
    return AccountClient(config, b"")


class WithAccountClient:
    """The clients of clients.yaml, plus the account client (never listed, never in the file)."""

    def __init__(self, registry, settings):
        self.registry = registry
        self.account = account_client(settings)

    def get(self, client_id):
        return self.account if client_id == ACCOUNT_CLIENT_ID else self.registry.get(client_id)

    def __getattr__(self, name):
        return getattr(self.registry, name)


# -- what the account can do ------------------------------------------------------------------

def _remaining(op, user, without) -> list:
    """The factors the user can sign in with, less `without`: a factor id (all of it goes) or an
    Authenticator about to be removed (its factor goes when it is the last of its kind)."""
    gone = without
    if without is not None and not isinstance(without, str):
        gone = without.kind if len(confirmed_authenticators(user.id, without.kind)) <= 1 else None
    return [factor for factor in op.factors.available_for(user) if factor.id != gone]


def can_do_mfa(op, user, without=None) -> bool:
    """Whether the user could meet the `mfa` level with the factors they live with (recovery
    codes are a backup; email and phone count only together, as at sign-in: chain.next_choices)."""
    try:
        level = mfa_level(op.levels)
    except AcrRequestError:
        return False
    factors = [factor for factor in _remaining(op, user, without)
               if factor.id not in BACKUP_FACTORS and factor.id not in level.forbidden_factors]
    if contact_gaps(user):
        factors = [factor for factor in factors if factor.flow not in CONTACT_FLOWS]
    if level.required_factors and not any(factor.id in level.required_factors for factor in factors):
        return False
    return len({factor.flow for factor in factors}) >= level.flows


def can_sign_in(op, user, without=None) -> bool:
    """Whether some factor could still start a sign-in."""
    return any(factor.first_factor for factor in _remaining(op, user, without))


def mfa_required(op, user) -> bool:
    """The user's own policy, else the global one, says every sign-in needs MFA."""
    return (user.mfa_policy or op.policy.value.policy) == "always"


def level_for(op, user):
    """What a fresh sign-in must reach: the mfa level for a user who can do MFA, else any factor."""
    return mfa_level(op.levels) if can_do_mfa(op, user) else None


def is_fresh(op, session, user, now: float | None = None) -> bool:
    """The same named check as the authorization endpoint (interaction.login_needed)."""
    if session is None or session.sub != user.id:
        return False
    need, _usable = login_needed(session, level_for(op, user), set(), op.settings.account.reauth_max_age, None,
                                 now or time.time())
    return need is None


# -- the step-up --------------------------------------------------------------------------------

def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def start(op, session, user, return_to: str):
    """Send the browser through an authorization request of the account client."""
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    op.store.set(PENDING.format(state=state),
                 {"sid": session.sid, "sub": user.id, "return_to": return_to, "verifier": verifier},
                 op.settings.lifetimes.interaction)
    level = level_for(op, user)
    params = {
        "client_id": ACCOUNT_CLIENT_ID, "response_type": "code", "scope": "openid", "state": state,
        "redirect_uri": op.settings.issuer_url + CALLBACK_PATH, "code_challenge": _s256(verifier),
        "code_challenge_method": "S256", "max_age": str(op.settings.account.reauth_max_age),
        "login_hint": user.username,
        "ui_locales": i18n.current(),  # the sign-in speaks the account page's language
    }
    if level is not None:
        params["acr_values"] = level.value
    record_audit("account.step_up_started", user_id=user.id, ip=request.remote_addr, return_to=return_to,
                 acr=level.value if level else None)
    return redirect(f"{url_for('oidc.authorize')}?{urlencode(params)}", code=303)


class StepUpFailed(Exception):
    """The step-up did not end well; `message_id` is a catalogued message."""

    def __init__(self, message_id: str):
        super().__init__(message_id)
        self.message_id = message_id


def finish(op, session, user, args) -> str:
    """Check the authorization response (state, code) and return the page to go back to."""
    from ..oauth.tokens import sha256_hex

    state, code = args.get("state") or "", args.get("code") or ""
    pending = op.store.take(PENDING.format(state=state)) if 0 < len(state) <= 64 else None
    if pending is None:
        raise StepUpFailed("reauth_expired")
    if user is None or pending["sub"] != user.id or pending["sid"] != session.sid:
        raise StepUpFailed("reauth_other_user")  # signed in as someone else meanwhile
    if args.get("error"):
        raise StepUpFailed("reauth_cancelled")
    issued = op.store.take(f"code:{sha256_hex(code)}") if 0 < len(code) <= 256 else None
    if (issued is None or issued["client_id"] != ACCOUNT_CLIENT_ID or issued["sub"] != user.id
            or issued["code_challenge"] != _s256(pending["verifier"])):
        raise StepUpFailed("reauth_expired")
    if not is_fresh(op, session, user):  # never loop: the request would have asked for more
        raise StepUpFailed("reauth_not_enough")
    record_audit("account.step_up_passed", user_id=user.id, ip=request.remote_addr,
                 acr=issued["auth"].get("acr"), amr=issued["auth"].get("amr"))
    return_to = pending["return_to"]
    return return_to if return_to.startswith("/") and not return_to.startswith("//") else CALLBACK_PATH
