"""Which language a page or an email speaks (Flask-Babel), and the translated catalogues.

A page's language is, in order: the one its login chose (the `ui_locales` of the
authorization request, kept in the interaction record, OIDC Core 3.1.2.1), a `ui_locales`
parameter on the request itself, the browser's Accept-Language, and else English.
Emails speak the language of the page that caused them; a notice sent without such a
page (an administrator's action) speaks the language of the user's last sign-in,
remembered in User.attributes["locale"]. Adding a language: see README ("Languages").
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from flask import g, has_request_context, request
from flask_babel import Babel, force_locale, get_locale, gettext, lazy_gettext, ngettext, refresh

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
DEFAULT = "en"
# Every language with a catalogue in translations/, and English (the msgids themselves).
SUPPORTED = ("en", "de")
ATTRIBUTE = "locale"  # User.attributes key: the language of the user's last sign-in

babel = Babel()


def init_app(app) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS))
    babel.init_app(app, default_locale=DEFAULT, locale_selector=select_locale)
    app.jinja_env.policies["ext.i18n.trimmed"] = True  # page msgids on one line (babel.cfg: trimmed)
    app.jinja_env.globals["current_locale"] = current


def negotiate(ui_locales: str | None) -> str | None:
    """The first supported language of a space-separated BCP 47 preference list, matching
    a region or script tag by its language (`de-CH` -> `de`); None when none is supported."""
    for tag in (ui_locales or "").split()[:20]:
        tag = tag.lower().replace("_", "-")
        for candidate in (tag, tag.split("-", 1)[0]):
            if candidate in SUPPORTED:
                return candidate
    return None


def select_locale() -> str:
    """Flask-Babel's locale selector for the current request."""
    if not has_request_context():  # the CLI: English unless a block says otherwise (speaking)
        return DEFAULT
    chosen = getattr(g, "ui_locale", None)
    if chosen:
        return chosen
    asked = negotiate(request.args.get("ui_locales") or _form_value("ui_locales"))
    if asked:
        return asked
    for tag, _quality in request.accept_languages:  # most preferred first; en-GB before a lower de
        found = negotiate(tag)
        if found:
            return found
    return DEFAULT


def _form_value(name: str) -> str | None:
    """A posted form field (POST /oidc/auth, the logout confirmation), never failing."""
    if request.method != "POST" or request.mimetype != "application/x-www-form-urlencoded":
        return None
    try:
        return request.form.get(name)
    except Exception:  # noqa: BLE001 - an oversized or broken body is another handler's error
        return None


def use(locale: str | None) -> None:
    """Pages of this request speak `locale` (e.g. the interaction's); None leaves the choice as is."""
    if locale in SUPPORTED and getattr(g, "ui_locale", None) != locale:
        g.ui_locale = locale
        refresh()  # forget a locale already picked earlier in this request


def current() -> str:
    """The language being spoken now: the request's, or a `speaking` block's ("en" without either)."""
    return str(get_locale() or DEFAULT)


def remember(user) -> bool:
    """Keep the current page's language as the user's (for notices sent without a page);
    True when the attribute changed (the caller commits)."""
    locale = current()
    attributes = dict(user.attributes or {})
    if attributes.get(ATTRIBUTE) == locale:
        return False
    attributes[ATTRIBUTE] = locale
    user.attributes = attributes  # a new dict: the JSON column notices the change
    return True


def user_locale(user) -> str:
    locale = (user.attributes or {}).get(ATTRIBUTE) if user is not None else None
    return locale if locale in SUPPORTED else DEFAULT


@contextmanager
def speaking(locale: str):
    """Translate in `locale` inside the block (an email to someone not looking at this page)."""
    with force_locale(locale if locale in SUPPORTED else DEFAULT):
        yield


__all__ = ["SUPPORTED", "current", "gettext", "init_app", "lazy_gettext", "negotiate", "ngettext", "remember",
           "select_locale", "speaking", "use", "user_locale"]
