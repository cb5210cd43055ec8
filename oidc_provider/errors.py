"""Two error families, each turned into a response in one place.

Protocol endpoints answer in OAuth's JSON format; pages a person sees answer with a
readable page. Nothing unexpected ever shows a traceback: the details go to the log
with an id, and the answer is `server_error` with that id.
"""

from __future__ import annotations

import logging
import uuid

from flask import current_app, jsonify, make_response, render_template, request
from flask_babel import gettext
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# Paths whose clients are programs: they get JSON errors, never pages.
API_PATHS = ("/oidc/token", "/oidc/device_authorization", "/oidc/revoke", "/oidc/introspect", "/oidc/userinfo",
             "/oidc/jwks", "/.well-known/", "/oidc/par", "/v1/", "/cis/v1/", "/push/devices/", "/push/challenges",
             "/admin/v1/", "/mfa/", "/oauth/")

def N_(message: str) -> str:
    """Marks a message for extraction (pybabel's default keyword); translated when read."""
    return message


class Catalogue(dict):
    """Messages by stable id, read in the current page's language (i18n.py): `MESSAGES[id]`
    is the translation, so views and templates need not know about languages."""

    def __getitem__(self, message_id: str) -> str:
        return gettext(super().__getitem__(message_id))

    def get(self, message_id, default=None):
        return self[message_id] if message_id in self else default


# User-facing messages, catalogued with stable ids (the interaction error family).
MESSAGES = Catalogue({
    "login_failed": N_("The username or password is not right, or the account cannot sign in now."),
    "interaction_expired": N_("This sign-in page has expired. Go back to the application and start again."),
    "interaction_browser": N_("This sign-in was started in another browser. Start again from the application."),
    "invalid_client": N_("The application that sent you here is not registered with this provider."),
    "invalid_redirect_uri": N_("The application asked to send you to an address it has not registered."),
    "invalid_request": N_("The request could not be understood."),
    "logout_redirect": N_("The application asked to send you to an address it has not registered for logout."),
    "invalid_id_token_hint": N_("The logout request carried a token this provider did not issue."),
    "not_found": N_("There is nothing at this address."),
    "method_not_allowed": N_("This address does not accept that kind of request."),
    "server_error": N_("Something went wrong on our side. Please try again."),
    "csrf": N_("This form has expired or was not sent by this site. Go back, reload and try again."),
    "signed_out": N_("Sign in to an application with this provider first, then come back to this page."),
    "login_missing": N_("Enter your username or email address first."),
    "code_failed": N_("That code is not right, has expired or was already used. Try again or send a new code."),
    "rate_limited": N_("Too many codes were requested. Wait a while before asking for another."),
    "resend_too_soon": N_("A code was sent moments ago. Wait a little before asking for another."),
    "delivery_failed": N_("We could not send the message just now. Try again, or choose another method."),
    "link_invalid": N_("This sign-in link has expired or was already used. Ask for a new one."),
    "factor_not_allowed": N_("That method cannot be used for this step. Choose another."),
    "mfa_unavailable": N_("This sign-in needs a second method, but the account has none it can use yet "
                       "(a verified email address and phone number, or another factor)."),
    "totp_failed": N_("That code is not right or was already used. Wait for the next code in your app and try again."),
    "recovery_code_failed": N_("That recovery code is not right or was already used. Check it and try again."),
    "totp_setup_expired": N_("This setup has expired. Start again to get a new QR code."),
    "push_failed": N_("The sign-in was not approved on your device: it was denied, or no answer came in time. "
                   "Try again or choose another method."),
    "push_rate_limited": N_("Too many approval requests were sent to your devices. Wait a while, or choose "
                         "another method."),
    "webauthn_failed": N_("That security key or passkey was not accepted, or the request expired. "
                       "Try again, or choose another method."),
    "webauthn_registration_failed": N_("The security key or passkey could not be added. Try again, and "
                                    "answer your browser's prompt when it appears."),
    "webauthn_kind": N_("That kind of security key or passkey cannot be added here."),
    "device_code_invalid": N_("That code is not right, has expired or was already used. Check the code your "
                           "device shows, or start again on the device."),
    "device_code_rate_limited": N_("Too many codes were tried from here. Wait a while before trying again."),
    "reauth_required": N_("For your security, confirm it is you again first: reload this page."),
    "reset_link_invalid": N_("This password reset link has expired or was already used. Ask for a new one on the "
                          "sign-in page."),
    "reset_other_browser": N_("Open this link in the browser where you asked to reset your password. "
                           "Nothing has been changed."),
    "reset_locked": N_("This account is locked for now after too many failed attempts, and its password cannot be "
                    "reset until the lock ends. Try again later."),
    "password_length": N_("Choose a password of at least 8 characters (and at most 1024)."),
    "password_mismatch": N_("The two passwords are not the same. Type the new password twice."),
    "password_changed": N_("Your password has been changed and every device signed in to your account has been "
                        "signed out. Sign in with your new password."),
    "enrollment_refused": N_("That method cannot be set up now. Choose one of those offered, or start again."),
    "phone_invalid": N_("Enter the number in international format: + and the country code, e.g. +14155550100."),
    "phone_unusable": N_("That number cannot be used. Enter another one."),
})


def wants_json() -> bool:
    return request.path.startswith(API_PATHS)


def oauth_error(error: str, description: str, status: int = 400):
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(message_id: str, status: int = 400, detail: str | None = None):
    return (
        render_template("error.html", message=MESSAGES[message_id], message_id=message_id, detail=detail),
        status,
    )


RETRY_AFTER = "5"  # seconds a client waits before trying again when a dependency is down


def outage_errors() -> tuple[type[Exception], ...]:
    """What the Redis client and the database driver raise when their server cannot be reached
    (down, restarting, failing over, a dropped connection): transient, so the answer is a 503."""
    from redis import exceptions as redis_errors
    from sqlalchemy import exc as sql_errors

    return (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.ClusterDownError,
            redis_errors.ReadOnlyError, sql_errors.OperationalError, sql_errors.InterfaceError,
            sql_errors.TimeoutError)


def unavailable(exc: Exception):
    """The ephemeral store or the database is unreachable: a retryable 503 in the path's own
    format (`temporarily_unavailable`, RFC 6749 4.1.2.1), never a traceback. The request's
    database transaction is rolled back, so nothing of it is half written."""
    from .extensions import db

    log.warning("dependency unavailable (%s): %s", exc.__class__.__name__, exc, exc_info=exc)
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the connection may be gone too; the session is discarded anyway
        pass
    if wants_json():
        response = oauth_error("temporarily_unavailable",
                               "The service is briefly unavailable. Try again in a few seconds.", 503)
    else:
        response = make_response(error_page("server_error", 503))
    response.headers["Retry-After"] = RETRY_AFTER
    response.headers["Cache-Control"] = "no-store"
    return response


def register_error_handlers(app) -> None:
    from flask_wtf.csrf import CSRFError

    for error in outage_errors():  # more specific than Exception, so these win over `unexpected`
        app.register_error_handler(error, unavailable)

    @app.errorhandler(CSRFError)
    def csrf_failed(exc):
        return error_page("csrf", 400)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        if status == 413:  # oversized body: a malformed request like any other
            status, error, message_id = 400, "invalid_request", "invalid_request"
            description = "The request body is too large."
        elif status == 404:
            error, message_id, description = "not_found", "not_found", "Not found."
        elif status == 405:
            error, message_id, description = "invalid_request", "method_not_allowed", "Method not allowed."
        else:
            error, message_id = "invalid_request", "invalid_request"
            description = exc.description or "The request could not be understood."
            status = status if 400 <= status < 500 else 400
        response = oauth_error(error, description, status) if wants_json() else error_page(message_id, status)
        if status == 405 and getattr(exc, "valid_methods", None):  # RFC 9110 15.5.6
            response = make_response(response)
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        incident = uuid.uuid4().hex[:12]
        current_app.logger.exception("unexpected error, incident %s", incident)
        if wants_json():
            return oauth_error("server_error", f"Unexpected error (incident {incident}).", 500)
        return error_page("server_error", 500, detail=gettext("Incident %(incident)s", incident=incident))
