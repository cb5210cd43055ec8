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

from .. import cookies, i18n
from . import chain
from ..observability import note_step_up
from .devices import new_device_id

DEVICE_COOKIE_AGE = 2 * 365 * 86400


def _store():
    return current_app.extensions["op"].store


def _lifetime() -> int:
    return current_app.extensions["op"].settings.lifetimes.interaction


# -- named checks, as in node-oidc-provider: which prompt, and why ------------------

def login_needed(session, level, prompts: set[str], max_age: int | None, record: dict | None,
                 now: float) -> tuple[str | None, list]:
    """Why the user must act before a code can be issued (or None), and the factors that count."""
    if session is None:
        return "login:no_session", []
    started = record["created_at"] if record else None
    usable, bound = chain.usable_factors(session.factors, prompts, max_age, started, now)
    if not usable:
        return bound or "login:no_session", []
    if not chain.satisfied(level, usable, now):
        return "login:mfa", usable
    return None, usable


def consent_needed(op, client, user, scope: str, prompts: set[str], record: dict | None) -> str | None:
    if record and record.get("consent_done"):
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

def create(datalist: dict, client, **fields) -> dict:
    """A new interaction record (saved by `start`); `fields` mark its kind, e.g. device=...
    `locale`: the language of every page of this login, from `ui_locales` (OIDC Core 3.1.2.1);
    None lets each page follow the browser's Accept-Language."""
    return {
        "uid": secrets.token_urlsafe(24),
        "params": datalist,
        "client_id": client.client_id,
        "created_at": time.time(),
        "browser": secrets.token_urlsafe(24),
        "locale": i18n.negotiate(" ".join(datalist.get("ui_locales") or [])),
        **fields,
    }


def start(datalist: dict, client, need: str, previous: dict | None, level=None, essential: bool = False,
          page: str = "interaction.show", render=None):
    """Store (or update) the interaction and send the browser to its page; `render(record, client)`,
    when given, answers with that page itself (the browser is spared a redirect)."""
    record = previous if previous is not None else create(datalist, client)
    note_step_up(record, need)  # metrics: a signed-in user asked for more factors
    record["step"] = "login" if need.startswith("login") else "consent"
    record["reason"] = need
    record["level"] = level.value if level else None  # what the login must reach (acr value)
    record["essential"] = essential
    save(record)
    response = render(record, client) if render else redirect(url_for(page, uid=record["uid"]), code=303)
    _browser_cookie(response, record, _lifetime())
    if not cookies.get(cookies.DEVICE):  # tells a known browser from a new one (policy input)
        cookies.put(response, cookies.DEVICE, new_device_id(), DEVICE_COOKIE_AGE)
    return response


def _browser_cookie(response, record: dict, max_age: float) -> None:
    cookies.put(response, cookies.INTERACTION, record["browser"], max_age)


def _expires_at(record: dict) -> float:
    return record.get("expires_at") or record["created_at"] + _lifetime()


def save(record: dict) -> None:
    _store().set(f"interaction:{record['uid']}", record, max(_expires_at(record) - time.time(), 1))


def extend(record: dict, seconds: float, response) -> None:
    """Keep the interaction, and the browser's cookie for it, at least `seconds` longer (a password
    reset waits for an email). Freshness still counts from `created_at`."""
    record["expires_at"] = max(_expires_at(record), time.time() + seconds)
    save(record)
    _browser_cookie(response, record, record["expires_at"] - time.time() + 1)


def load_for_browser(uid: str) -> tuple[dict | None, str | None]:
    """The interaction, if it exists and belongs to this browser; else a catalogued problem."""
    if not uid or len(uid) > 64:
        return None, "interaction_expired"
    record = _store().get(f"interaction:{uid}")
    if record is None or _expires_at(record) <= time.time():  # the store's expiry runs on its own clock
        return None, "interaction_expired"
    i18n.use(record.get("locale"))  # every page of this login speaks the language it began in
    cookie = cookies.get(cookies.INTERACTION, "")
    if not hmac.compare_digest(cookie.encode(), record["browser"].encode()):
        return None, "interaction_browser"
    return record, None


def finish(record: dict, batch=None) -> None:
    (batch or _store()).delete(f"interaction:{record['uid']}")
