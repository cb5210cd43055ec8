"""Languages: the pages of a login speak the language its `ui_locales` chose (OIDC Core
3.1.2.1), or the browser's Accept-Language, else English; the emails a page causes speak
its language; discovery lists exactly the languages there are; the committed catalogues
are complete and compiled."""

from __future__ import annotations

import re
import uuid
from io import BytesIO
from pathlib import Path

import jwt
import pytest
import requests

from tests.conftest import UserAgent, callback_params, post, start_provider, token_request
from tests.servers import email_code, text_of

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "oidc_provider" / "translations"
LANGUAGES = ["en", "de"]


@pytest.fixture(scope="module")
def provider(tmp_path_factory, plain_smtp):
    running, stop = start_provider(tmp_path_factory.mktemp("i18n"), "sqlite-sql", extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none", "timeout": 5},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000},
    })
    yield running
    stop()


@pytest.fixture
def person(provider):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    return provider.add_user(phone=phone, phone_verified=True, email_verified=True)


def lang_of(page) -> str:
    return re.search(r'<html lang="([^"]+)"', page.text).group(1)


def h1_of(page) -> str:
    return re.search(r"<h1[^>]*>(.*?)</h1>", page.text, re.S).group(1).strip()


def login_page(provider, headers=None, **params) -> tuple[UserAgent, requests.Response]:
    agent = UserAgent(provider)
    agent.http.headers.update(headers or {})
    return agent, agent.authorize(**{"client_id": "web", **params})


# -- choosing the language ---------------------------------------------------------------------

def test_ui_locales_de_carries_through_every_step_and_the_email(provider, person, plain_smtp):
    agent, page = login_page(provider, ui_locales="de", acr_values="mfa")
    assert (lang_of(page), h1_of(page)) == ("de", "Anmelden")
    assert "Benutzername oder E-Mail" in page.text and "Passwort vergessen?" in page.text

    # The browser says English from now on: the login keeps the language it began in.
    agent.http.headers["Accept-Language"] = "en-US,en;q=0.9"
    refused = agent.login(page, person["username"], "not the password")
    assert refused.status_code == 401 and lang_of(refused) == "de"
    assert "Benutzername oder Passwort sind falsch" in refused.text

    choice = agent.login(refused, person["username"])
    assert (lang_of(choice), h1_of(choice)) == ("de", "Noch ein Schritt")
    assert "Code per E-Mail" in choice.text and "Code per SMS" in choice.text

    code_page = post(agent, choice, "start", {"factor": "email-otp"})
    assert (lang_of(code_page), h1_of(code_page)) == ("de", "Code eingeben")
    assert "Wir haben einen Code an" in code_page.text and "Neuen Code senden" in code_page.text

    # The email the page caused, as the real SMTP server received it, is in German too.
    address = f"{person['username']}@example.com"
    message = plain_smtp.mailbox.to(address)[-1].message
    assert message["Subject"] == "Ihr Code, um sich anzumelden"
    body = text_of(message)
    assert "Ihr Code, um sich anzumelden, lautet:" in body and "Geben Sie diesen Code niemandem weiter" in body
    assert '<html lang="de">' in message.get_body(("html",)).get_content()

    wrong = agent.submit(code_page, {"code": "000000"})
    assert wrong.status_code == 401 and "Dieser Code ist falsch" in wrong.text and lang_of(wrong) == "de"
    done = agent.submit(wrong, {"code": email_code(plain_smtp, address)})
    params = callback_params(done)
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                      "redirect_uri": "http://127.0.0.1:9/callback"}).json()
    assert jwt.decode(tokens["id_token"], options={"verify_signature": False})["acr"] == "mfa"


def test_consent_follows_ui_locales(provider, person):
    agent, page = login_page(provider, ui_locales="de", client_id="web-post", scope="openid email")
    consent = agent.login(page, person["username"])
    assert h1_of(consent) == "Post app erlauben?" and "Ihre E-Mail-Adresse sehen" in consent.text
    assert 'value="approve">Erlauben</button>' in consent.text


@pytest.mark.parametrize("ui_locales, accept, expected", [
    ("de", None, "de"),
    ("fr de", None, "de"),  # the first supported one of the preference list
    ("de-CH en", None, "de"),  # a regional tag matches its language
    ("en", "de-DE,de;q=0.9", "en"),  # ui_locales wins over the browser
    (None, "de-DE,de;q=0.9,en;q=0.5", "de"),  # no ui_locales: Accept-Language
    (None, "fr-FR,de;q=0.5", "de"),
    (None, "en-GB,de;q=0.5", "en"),
    ("xx-YY", None, "en"),  # nothing known: English
    ("ja", "fr-FR", "en"),
    (None, None, "en"),
])
def test_language_choice(provider, ui_locales, accept, expected):
    _agent, page = login_page(provider, {"Accept-Language": accept} if accept else None, ui_locales=ui_locales)
    assert page.status_code == 200 and lang_of(page) == expected
    assert h1_of(page) == {"en": "Sign in", "de": "Anmelden"}[expected]


def test_error_pages_speak_the_request_language(provider):
    unknown = requests.get(f"{provider.url}/oidc/auth", timeout=10, params={
        "client_id": "nobody", "response_type": "code", "scope": "openid", "ui_locales": "de"})
    assert unknown.status_code == 400 and lang_of(unknown) == "de" and h1_of(unknown) == "Es geht nicht weiter"
    assert "Die Anwendung, die Sie hierher geschickt hat, ist bei diesem Anbieter nicht registriert." in unknown.text
    missing = requests.get(f"{provider.url}/no-such-page", headers={"Accept-Language": "de"}, timeout=10)
    assert missing.status_code == 404 and "Unter dieser Adresse gibt es nichts." in missing.text
    english = requests.get(f"{provider.url}/no-such-page", timeout=10)
    assert lang_of(english) == "en" and "There is nothing at this address." in english.text


def test_discovery_lists_the_languages(provider):
    assert provider.discovery()["ui_locales_supported"] == LANGUAGES


def test_the_sign_in_language_is_remembered_for_notices_sent_without_a_page(provider, person, plain_smtp):
    """An administrator's reset has no page of the user's: its notice speaks the language of
    the user's last sign-in."""
    from oidc_provider import admin
    from oidc_provider.extensions import db
    from oidc_provider.models import User

    agent, page = login_page(provider, ui_locales="de")
    callback_params(agent.login(page, person["username"]))
    with provider.app.app_context():
        user = db.session.get(User, person["sub"])
        assert user.attributes["locale"] == "de"
        answer = admin.reset_factor(provider.op, user, "phone", admin.Actor("cli"), reason="i18n test")
    assert answer["notified"] is True
    notice = plain_smtp.mailbox.to(f"{person['username']}@example.com")[-1].message
    assert notice["Subject"] == "Anmeldemethoden wurden aus Ihrem Konto entfernt"
    assert "Ein Administrator hat diese Anmeldemethoden" in text_of(notice) and "Telefonnummer +1555" in text_of(notice)


# -- the catalogues ----------------------------------------------------------------------------

def _extracted() -> set:
    """The msgids the sources hold now, extracted as `make messages` does."""
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    with open(ROOT / "babel.cfg") as config:
        method_map, options_map = parse_mapping_cfg(config)
    keywords = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}
    return {message_id for _file, _line, message_id, _comments, _context
            in extract_from_dir(ROOT / "oidc_provider", method_map, options_map, keywords=keywords)}


def _ids(catalog) -> set:
    return {message.id if isinstance(message.id, str) else message.id[0] for message in catalog if message.id}


def test_messages_pot_is_up_to_date_with_the_sources():
    from babel.messages.pofile import read_po

    extracted = {m if isinstance(m, str) else m[0] for m in _extracted()}
    with open(ROOT / "messages.pot", "rb") as pot:
        template = _ids(read_po(pot))
    assert extracted == template, f"run `make messages`: new {extracted - template}, gone {template - extracted}"


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_every_message_is_translated_and_the_mo_matches_the_po(lang):
    from babel.messages.mofile import read_mo, write_mo
    from babel.messages.pofile import read_po

    folder = TRANSLATIONS / lang / "LC_MESSAGES"
    with open(folder / "messages.po", "rb") as po, open(ROOT / "messages.pot", "rb") as pot:
        catalog, template = read_po(po), read_po(pot)
    assert _ids(catalog) == _ids(template), "run `make messages`"
    untranslated = [m.id for m in catalog if m.id and (m.fuzzy or not all(m.string if isinstance(m.string, tuple)
                                                                             else [m.string]))]
    assert not untranslated, untranslated
    assert not [error for message in catalog for error in message.check(catalog)], "placeholders must match"

    compiled = BytesIO()
    write_mo(compiled, catalog)
    with open(folder / "messages.mo", "rb") as mo:
        committed = read_mo(mo)
    fresh = read_mo(BytesIO(compiled.getvalue()))
    def pairs(compiled_catalog) -> dict:
        return {str(m.id): str(m.string) for m in compiled_catalog if m.id}

    assert pairs(committed) == pairs(fresh), \
        "the .mo is older than the .po: run `make messages`"
