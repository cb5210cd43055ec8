"""Push approval: device enrollment, the device API (pending challenges, approve/deny), account page.

Everything here exists only when the `push` factor is enabled; the rules (single use,
expiry, which device may answer) live in the factor, authn/factors/push.py.

For people, on the account (the browser's signed-in user, CSRF-protected forms):
    GET  /push/devices                      the enrolled devices, each with a Remove link
                                            (account_security's confirmation page)
    POST /push/devices/<device_id>/remove   the same removal, for forms that post here
    GET  /push/enroll                       a QR code of a fresh enrollment URL
Showing an enrollment code and removing a device need a fresh sign-in (account.sensitive);
a device's enrollment and removal are mailed to the user.

The device protocol (JSON; errors are {"error", "error_description"} with a 4xx status):

1. Enroll. The QR code holds `<issuer>/push/devices?token=<enrollment token>`; the token is
   single use and lives `push.enrollment_lifetime` seconds. The device makes an ES256 key
   pair and posts, to that URL without its query:
       POST /push/devices
       {"token": "...", "name": "Ada's phone", "public_key": {EC P-256 public JWK},
        "push_token": "..."}                          (push_token optional, for the gateway)
   201 {"device_id": "<RFC 7638 thumbprint of the key>", "name": "..."}.
   400 invalid_token (unknown, expired or used), 400 invalid_key, 409 already_enrolled.

2. List what waits for an answer (after a gateway notification, or by polling):
       GET /push/devices/<device_id>/challenges
       Authorization: Device <JWT>
   The JWT is signed by the device key: header {"alg": "ES256", "typ": "push-request+jwt",
   "kid": <device_id>}, claims {"htm": "GET", "htu": "<issuer>/push/devices/<device_id>/challenges",
   "iat": <now>, "jti": <16+ random characters>} (as DPoP proofs, RFC 9449 4.2). iat must be
   within 60 s of the server's clock and a jti is accepted once.
   200 {"challenges": [{"id", "nonce", "client", "ip", "place", "created_at", "expires_at"}]}
   newest first; 401 invalid_request_signature.

3. Answer:
       POST /push/challenges/<challenge_id>
       {"decision": "approve" | "deny", "signature": "<compact JWS>"}
   The JWS header is {"alg": "ES256", "typ": "push-answer+jws", "kid": <device_id>}; its
   payload the JSON object {"challenge": <challenge id>, "nonce": <its nonce>,
   "decision": <the decision>}. The signature is the device's authentication: no other
   header is needed. 200 {"decision": ...}; 403 unknown_device, wrong_device (a device of
   another user), bad_signature; 404 unknown_challenge; 409 already_answered (a replay, or
   another device was first); 410 expired.

Any enrolled device of the user may answer, not only those notified: a person answers on
whichever of their phones is at hand, and each of them was enrolled from a signed-in
account. A device of another user never can.

The waiting sign-in page (factor_push.html, interaction.show) reloads every two seconds;
each load reads the store once (PushFactor.poll) and never holds a worker.
"""

from __future__ import annotations

import functools
import time

import segno
from flask import Blueprint, current_app, jsonify, redirect, render_template, request, url_for
from markupsafe import Markup

from ..authn.factors.push import PushError
from ..extensions import csrf, db
from ..models import User
from .account import notify, sensitive, user_and_factor, when

bp = Blueprint("push", __name__, url_prefix="/push")


def _op():
    return current_app.extensions["op"]


def _factor():
    return _op().factors.get("push")


def _json_error(status: int, error: str, description: str):
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _json(value, status=200):
    response = jsonify(value)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the account pages --------------------------------------------------------------------------

@bp.get("/devices")
def devices():
    user, factor, failure = user_and_factor("push")
    if failure:
        return failure
    rows = [{"id": device.lookup, "aid": device.id, "name": device.name, "since": when(device.created_at),
             "last_used": when(device.last_used_at)} for device in factor.devices(user.id)]
    return render_template("push_devices.html", devices=rows, removed=request.args.get("removed"))


@bp.post("/devices/<device_id>/remove")
def remove(device_id: str):
    """The same as account_security.remove (by the device id the device knows)."""
    from .account_security import remove as remove_factor

    user, factor, failure = user_and_factor("push")
    if failure:
        return failure
    device = factor.device(device_id)
    if device is None or device.user_id != user.id:
        return redirect(url_for("push.devices"), code=303)
    return remove_factor(device.id)


@bp.get("/enroll")
@sensitive()
def enroll_page():
    """A fresh single-use enrollment token each time the page is shown, as a QR code."""
    user, factor, failure = user_and_factor("push")
    if failure:
        return failure
    token, expires_at = factor.new_enrollment(user)
    url = f"{_op().settings.issuer_url}{url_for('push.enroll')}?token={token}"
    qr = Markup(segno.make(url, error="m").svg_inline(scale=4, title="Enrollment QR code"))
    minutes = max(1, round((expires_at - time.time()) / 60))
    return render_template("push_enroll.html", url=url, qr_svg=qr, minutes=minutes)


# -- the device API (devices sign their requests; no browser forms, so no CSRF token) ----------------

def _device_api(view):
    """JSON in and out, only when push is enabled; PushError becomes its JSON answer."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        factor = _factor()
        if factor is None:
            return _json_error(404, "not_found", "Push approval is not enabled.")
        try:
            return view(factor, *args, **kwargs)
        except PushError as refused:
            current_app.logger.info("push device request refused: %s %s", refused.error, refused.description)
            return _json_error(refused.status, refused.error, refused.description)

    return csrf.exempt(wrapper)


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise PushError(400, "invalid_request", "The body must be a JSON object.")
    return body


@bp.post("/devices")
@_device_api
def enroll(factor):
    body = _body()
    device = factor.enroll(body.get("token"), body.get("name"), body.get("public_key"),
                           push_token=body.get("push_token"), ip=request.remote_addr)
    notify(db.session.get(User, device.user_id), "push.device_enrolled", name=device.name)  # audited by enroll
    return _json({"device_id": device.lookup, "name": device.name}, 201)


@bp.get("/devices/<device_id>/challenges")
@_device_api
def challenges(factor, device_id: str):
    url = f"{_op().settings.issuer_url}{request.path}"
    device = factor.authenticate_request(device_id, request.headers.get("Authorization"), request.method, url)
    return _json({"challenges": factor.pending_for(device)})


@bp.post("/challenges/<challenge_id>")
@_device_api
def answer(factor, challenge_id: str):
    body = _body()
    decision = factor.answer(challenge_id, body.get("decision"), body.get("signature"), ip=request.remote_addr)
    return _json({"decision": decision})
