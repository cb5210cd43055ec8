"""Interactions: a paused authorization request waiting for the user to act.

The record holds the original request parameters and what the user has done in it.
It is bound to the browser that started it by a random value in a cookie, so a
sign-in link sent to someone else cannot be completed in their browser.
"""

from __future__ import annotations

import hmac
import secrets
import time

from flask import current_app, redirect, request, url_for

BROWSER_COOKIE = "op_interaction"


def _store():
    return current_app.extensions["op"].store


def _lifetime() -> int:
    return current_app.extensions["op"].settings.lifetimes.interaction


# -- named checks, as in node-oidc-provider: which prompt, and why ------------------

def login_needed(session, prompts: set[str], max_age: int | None, done: dict, now: float) -> str | None:
    """Why the user must sign in, or None. A login done in this interaction satisfies all."""
    if session is None:
        return "login:no_session"
    if done.get("login_done"):
        return None
    if "login" in prompts:
        return "login:prompt"
    if max_age is not None and now - session.auth_time > max_age:  # OIDC Core 3.1.2.1
        return "login:max_age"
    return None


def consent_needed(op, client, user, scope: str, prompts: set[str], done: dict) -> str | None:
    if done.get("consent_done"):
        return None
    if "consent" in prompts:
        return "consent:prompt"
    if client.config.first_party:
        return None
    granted = op.store.get(f"consent:{user.id}:{client.client_id}") or []
    if not set(scope.split()) <= set(granted):
        return "consent:missing"
    return None


# -- the record ----------------------------------------------------------------------

def start(datalist: dict, client, need: str, previous: dict | None):
    """Store (or update) the interaction and send the browser to its page."""
    if previous is not None:
        record = previous
    else:
        record = {
            "uid": secrets.token_urlsafe(24),
            "params": datalist,
            "client_id": client.client_id,
            "created_at": int(time.time()),
            "browser": secrets.token_urlsafe(24),
        }
    record["step"] = "login" if need.startswith("login") else "consent"
    record["reason"] = need
    save(record)
    response = redirect(url_for("interaction.show", uid=record["uid"]), code=303)
    secure = current_app.config["SESSION_COOKIE_SECURE"]
    response.set_cookie(BROWSER_COOKIE, record["browser"], httponly=True, samesite="Lax", secure=secure,
                        max_age=_lifetime(), path="/")
    return response


def save(record: dict) -> None:
    remaining = record["created_at"] + _lifetime() - time.time()
    _store().set(f"interaction:{record['uid']}", record, max(remaining, 1))


def load_for_browser(uid: str) -> tuple[dict | None, str | None]:
    """The interaction, if it exists and belongs to this browser; else a catalogued problem."""
    if not uid or len(uid) > 64:
        return None, "interaction_expired"
    record = _store().get(f"interaction:{uid}")
    if record is None:
        return None, "interaction_expired"
    cookie = request.cookies.get(BROWSER_COOKIE, "")
    if not hmac.compare_digest(cookie.encode(), record["browser"].encode()):
        return None, "interaction_browser"
    return record, None


def finish(record: dict) -> None:
    _store().delete(f"interaction:{record['uid']}")
