"""Sign-in through upstream OpenID providers (social login, `urn:<ns>:<idp>_direct`).

Three ways in, one way out. The login page shows a button per configured upstream;
`acr_values=urn:<ns>:<idp>_direct` on /oidc/auth skips the login page (oauth/endpoints.py
hands the new interaction to `authn.upstream.direct_start`); and Transmit's
`GET /v1/auth/social/<provider>` (also under /cis) is turned into an ordinary
authorization request with that acr value. Each starts `/interaction/<uid>/upstream/<name>`,
which sends the browser to the upstream. `/federation/callback` checks that the answer
belongs to this browser and this interaction and is used once, validates the upstream's
ID token, links or creates the user and completes the `fed` factor the way every factor
completes; /oidc/auth/resume then decides what comes next (a second factor, consent, the
code).
"""

from __future__ import annotations

import hmac
import time
from urllib.parse import urlencode

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from .. import cookies
from ..i18n import gettext, lazy_gettext as _l
from ..authn import interaction as interactions
from ..authn.upstream import PENDING_LIFETIME, UpstreamError, enabled, federation_factor, upstreams, user_for
from ..errors import error_page
from ..models import record_audit
from ..oauth.endpoints import redirect_to_client
from .interaction import _complete, _load, _signed_in_user

bp = Blueprint("federation", __name__)

# The messages of this blueprint's pages, by stable id (errors.py keeps the shared ones).
MESSAGES = {
    "upstream_unknown": _l("This way of signing in is not available."),
    "upstream_failed": _l("Signing in with %(name)s did not work. Try again, or choose another way to sign in."),
    "upstream_declined": _l("%(name)s did not confirm the sign-in. Try again, or choose another way to sign in."),
    "upstream_state": _l("This answer from the other provider is not for this browser, has expired or was "
                         "already used. Start again from the application."),
    "upstream_account": _l("This account cannot sign in now."),
    "upstream_other_user": _l("That account is not the one signing in here. Use the same account for every step."),
}


@bp.record_once
def _check_settings(state):
    upstreams(state.app)  # a missing client secret stops the start-up, naming the key


@bp.app_context_processor
def _template_helpers():
    return {"upstream_buttons": upstream_buttons}


def upstream_buttons(uid: str) -> list[tuple[str, str]]:
    """(label, URL) for each upstream the login page offers."""
    if federation_factor() is None:
        return []
    return [(gettext("Continue with %(name)s", name=upstream.display_name), url_for("federation.start", uid=uid, name=name))
            for name, upstream in upstreams().items()]


def _callback_url() -> str:
    return current_app.extensions["op"].settings.issuer_url + url_for("federation.callback")


def _problem(message_id: str, status: int, upstream=None, uid: str | None = None):
    name = upstream.display_name if upstream else gettext("the other provider")
    return render_template("upstream_error.html", message=str(MESSAGES[message_id]) % {"name": name},
                           message_id=message_id, uid=uid), status


# -- starting --------------------------------------------------------------------------------

def _freshness(record) -> int | None:
    """The max_age to ask of the upstream: our request's (OIDC Core 3.1.2.1), 0 for prompt=login.
    A factor is recorded as done now, so the upstream's authentication must be as fresh."""
    params = {key: values[0] for key, values in record["params"].items() if values}
    if "login" in (params.get("prompt") or "").split():
        return 0
    return int(params["max_age"]) if (params.get("max_age") or "").isdigit() else None


@bp.get("/interaction/<uid>/upstream/<name>")
def start(uid: str, name: str):
    """Send the browser to the upstream, with state, nonce and PKCE kept for the callback."""
    record, client, failure = _load(uid)
    if failure:
        return failure
    upstream = enabled(name)
    if upstream is None:
        return _problem("upstream_unknown", 404, uid=uid)
    if record["step"] != "login" or record.get("reason") == "login:mfa":  # a first factor only
        return redirect(url_for("interaction.show", uid=uid), code=303)
    max_age = _freshness(record)
    try:
        authorization = upstream.authorization_request(_callback_url(), max_age)
    except UpstreamError as exc:
        current_app.logger.warning("upstream sign-in not started: %s", exc)
        return _problem("upstream_failed", 502, upstream, uid)
    op = current_app.extensions["op"]
    lifetime = min(PENDING_LIFETIME, record["created_at"] + op.settings.lifetimes.interaction - time.time())
    op.store.set(f"upstream:{authorization.state}", {
        "uid": uid, "browser": record["browser"], "upstream": name, "nonce": authorization.nonce,
        "code_verifier": authorization.code_verifier, "redirect_uri": _callback_url(), "max_age": max_age,
    }, max(lifetime, 1))
    record_audit("federation.started", client_id=client.client_id, ip=request.remote_addr, provider=name)
    response = redirect(authorization.url, code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the answer ------------------------------------------------------------------------------

@bp.get("/federation/callback")
def callback():
    """OIDC Core 3.1.2.5-3.1.3.7 as the relying party, then the `fed` factor is complete."""
    op = current_app.extensions["op"]
    state = request.args.get("state") or ""
    pending = op.store.get(f"upstream:{state}") if 0 < len(state) <= 128 else None
    browser = cookies.get(cookies.INTERACTION, "")
    # The state proves nothing unless this browser started it (RFC 6749 10.12: login CSRF).
    if pending is None or not hmac.compare_digest(browser.encode(), pending["browser"].encode()):
        return _problem("upstream_state", 400)
    if op.store.take(f"upstream:{state}") is None:  # used once, also under concurrent requests
        return _problem("upstream_state", 400)
    record, client, failure = _load(pending["uid"])
    if failure:
        return failure
    upstream = enabled(pending["upstream"])
    if upstream is None:
        return _problem("upstream_unknown", 404, uid=record["uid"])
    factor = federation_factor()

    def refused(message_id: str, reason: str, status: int = 502):
        current_app.logger.warning("upstream sign-in refused: %s", reason)
        record_audit("factor.failed", client_id=client.client_id, ip=request.remote_addr, factor=factor.id,
                     provider=upstream.name, reason=reason[:300])
        return _problem(message_id, status, upstream, record["uid"])

    if request.args.get("error"):  # the user cancelled, or the upstream refused (3.1.2.6)
        return refused("upstream_declined", f"{upstream.name} answered {request.args['error'][:100]}", 400)
    try:
        # RFC 9207: an answer naming another issuer is a mix-up attack
        if "iss" in request.args and request.args["iss"] not in upstream.issuers():
            raise UpstreamError(f"{upstream.name}: the answer came from issuer {request.args['iss']!r}")
        code = request.args.get("code") or ""
        if not code or len(code) > 2048:
            raise UpstreamError(f"{upstream.name}: the answer has no usable code")
        tokens = upstream.exchange(code, pending["redirect_uri"], pending["code_verifier"])
        identity = upstream.identity(tokens, pending["nonce"], pending["max_age"])
        user, how = user_for(identity)
    except UpstreamError as exc:
        return refused("upstream_failed", str(exc))
    if user.disabled or op.lockout.is_locked(user):
        return refused("upstream_account", "account disabled or locked", 403)
    signed_in, _ = _signed_in_user(record)
    if signed_in is not None and signed_in.id != user.id:  # a later step must be the same person
        return refused("upstream_other_user", "the upstream account belongs to another user", 403)
    record_audit("federation.signed_in", user_id=user.id, client_id=client.client_id, ip=request.remote_addr,
                 provider=upstream.name, subject=identity.subject, by=how)
    return _complete(record, client, user, factor)


# -- Transmit's social login URL ---------------------------------------------------------------

@bp.get("/v1/auth/social/<provider>")
@bp.get("/cis/v1/auth/social/<provider>")
def social(provider: str):
    """GET /v1/auth/social/<provider>?client_id=..&redirect_uri=..[&require_mfa=true]: an
    authorization request that starts at that upstream; the code reaches the redirect_uri."""
    op = current_app.extensions["op"]
    args = request.args
    client = op.clients.get(args.get("client_id")) if args.get("client_id") else None
    if client is None:
        return error_page("invalid_client", 400)
    redirect_uri = args.get("redirect_uri")
    if not redirect_uri or not client.check_redirect_uri(redirect_uri):  # shown, never redirected to
        return error_page("invalid_redirect_uri", 400)
    repeated = [key for key in args if len(args.getlist(key)) > 1]
    if repeated:
        return error_page("invalid_request", 400, detail=f"'{repeated[0][:40]}' is included more than once.")
    if enabled(provider) is None:
        return redirect_to_client(redirect_uri, {"error": "invalid_request", "state": args.get("state"),
                                                 "error_description": "Unknown social login provider."})
    query = {
        "client_id": client.client_id, "redirect_uri": redirect_uri, "response_type": "code",
        "scope": args.get("scope") or "openid", "acr_values": f"urn:transmit:{provider}_direct",
        **{key: args[key] for key in ("state", "nonce", "require_mfa", "code_challenge", "code_challenge_method",
                                      "prompt", "max_age", "login_hint", "ui_locales") if key in args},
    }
    return redirect(url_for("oidc.authorize") + "?" + urlencode(query), code=302)
