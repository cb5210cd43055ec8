"""Delivery against real servers on 127.0.0.1: aiosmtpd (plain, and STARTTLS with a
self-signed certificate and AUTH) for email, an http.server standing in for the webhook
and the Twilio-shaped gateway. Assertions are on what those servers received."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jinja2.exceptions import UndefinedError

from oidc_provider.delivery import Delivery, DeliveryError, spell_digits
from oidc_provider.extensions import db
from oidc_provider.models import OutboxMessage
from oidc_provider.settings import ConfigError, load_settings
from tests.conftest import start_provider
from tests.servers import Mailbox, Received, SmtpServer, delivered, free_port  # noqa: F401

SMTP_USER, SMTP_PASSWORD = "mailer", "smtp-secret-pw"
HOOK_TOKEN, TWILIO_SID, TWILIO_TOKEN = "hook-token-xyz", "AC0123456789", "twilio-secret-xyz"
CODE = "482913"


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@example.com"


def unique_phone() -> str:
    return f"+1555{uuid.uuid4().int % 10**7:07d}"


def check_login(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(), SMTP_PASSWORD.encode())
    if ok:
        return AuthResult(success=True, auth_data=auth_data)
    return AuthResult(success=False, handled=False)  # aiosmtpd answers 535


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made here with cryptography."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp.crt", folder / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture(scope="module")
def starttls_smtp(certificate):
    """STARTTLS required before anything, AUTH required after it: a submission server."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, server_hostname="mx.test",
                            tls_context=context, require_starttls=True, auth_required=True,
                            auth_require_tls=True, authenticator=check_login)
    controller.start()
    yield SmtpServer(mailbox, port)
    controller.stop()


@pytest.fixture(scope="module")
def implicit_tls_smtp(certificate):
    """TLS from the first byte (port 465 style)."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, server_hostname="mx.test",
                            ssl_context=context)
    controller.start()
    yield SmtpServer(mailbox, port)
    controller.stop()


# -- providers --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dev_provider(tmp_path_factory, plain_smtp, gateway_server):
    """dev_mode: plain SMTP, SMS through the webhook, voice through the Twilio shape."""
    provider, stop = start_provider(tmp_path_factory.mktemp("delivery-dev"), "sqlite-sql", extra_settings={
        "dev_mode": True,
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none", "timeout": 5,
                  "from_address": "Example Sign-in <no-reply@op.example>"},
        "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/hook", "token": HOOK_TOKEN, "timeout": 5},
        "voice": {"gateway": "twilio", "url": gateway_server.url, "account_sid": TWILIO_SID,
                  "auth_token": TWILIO_TOKEN, "from_number": "+15550000", "timeout": 5},
    })
    yield provider
    stop()


@pytest.fixture(scope="module")
def prod_provider(tmp_path_factory, starttls_smtp, certificate, gateway_server):
    """Production: STARTTLS + AUTH verified against the test CA, SMS by Twilio, voice by webhook."""
    provider, stop = start_provider(tmp_path_factory.mktemp("delivery-prod"), "sqlite-sql", extra_settings={
        "dev_mode": False,
        "email": {"host": "127.0.0.1", "port": starttls_smtp.port, "security": "starttls", "timeout": 5,
                  "username": SMTP_USER, "password": SMTP_PASSWORD, "ca_file": str(certificate[0]),
                  "from_address": "no-reply@op.example"},
        "sms": {"gateway": "twilio", "url": gateway_server.url, "account_sid": TWILIO_SID,
                "auth_token": TWILIO_TOKEN, "from_number": "+15550000", "timeout": 5},
        "voice": {"gateway": "webhook", "url": f"{gateway_server.url}/voice", "timeout": 5},
    })
    yield provider
    stop()


def delivery_for(provider, **settings) -> Delivery:
    """A Delivery with other settings, for failure cases; the rest of the provider is unchanged."""
    delivery = Delivery(load_settings(None, settings), provider.base_dir)
    delivery.init_app(provider.app)
    return delivery


def outbox_rows(provider, to: str) -> list[OutboxMessage]:
    delivered()
    with provider.app.app_context():
        query = db.select(OutboxMessage).filter_by(to=to).order_by(OutboxMessage.at, OutboxMessage.id)
        return list(db.session.execute(query).scalars())


def parts(received: Received) -> tuple[str, str]:
    """The text and HTML parts, with the wire's CRLF line ends made LF."""
    message = received.message
    text, html = (message.get_body((kind,)).get_content() for kind in ("plain", "html"))
    return text.replace("\r\n", "\n"), html.replace("\r\n", "\n")


# -- email ------------------------------------------------------------------------------

def test_otp_email_over_plain_smtp(dev_provider, plain_smtp):
    to = unique_email()
    with dev_provider.app.app_context():
        dev_provider.op.delivery.send_email(to, "otp", {"code": CODE, "minutes": 10, "purpose": "sign in"})

    [received] = plain_smtp.mailbox.to(to)
    message = received.message
    assert received.mail_from == "no-reply@op.example" and received.rcpt_tos == [to]
    assert message["To"] == to and message["From"] == "Example Sign-in <no-reply@op.example>"
    assert message["Subject"] == "Your code to sign in"
    assert CODE not in message["Subject"]  # lock screens show subjects
    assert message.get_content_type() == "multipart/alternative"
    assert message["Message-ID"].endswith("@op.example>") and message["Date"]
    text, html = parts(received)
    assert f"    {CODE}\n" in text and "expires\nin 10 minutes" in text and "<" not in text
    assert f"<strong>{CODE}</strong>" in html and '<html lang="en">' in html
    assert "<title>Your code to sign in</title>" in html
    for external in ("<img", "<script", "<link", "src=", "url("):
        assert external not in html  # no external assets, nothing to load

    [kept] = outbox_rows(dev_provider, to)  # dev_mode: also in the outbox
    assert (kept.channel, kept.subject) == ("email", "Your code to sign in") and CODE in kept.body


def test_every_template_renders_and_escapes_html(dev_provider, plain_smtp):
    to = unique_email()
    url = "https://op.example/magic?token=abc&state=x"
    with dev_provider.app.app_context():
        delivery = dev_provider.op.delivery
        delivery.send_email(to, "magic_link", {"url": url, "minutes": 1})
        delivery.send_email(to, "verify_email", {"code": CODE, "minutes": 15})
        delivery.send_email(to, "notice", {"subject": "New sign-in from <Firefox>",
                                           "text": "Someone signed in.\n\nIf it was not you: <act> & now."})
        delivery.send_email(to, "otp", {"code": CODE, "minutes": 5, "purpose": "confirm a change"})
    magic, verify, notice, otp = plain_smtp.mailbox.to(to)

    text, html = parts(magic)
    assert magic.message["Subject"] == "Your sign-in link"
    assert url in text and "expires in 1 minute." in text
    assert 'href="https://op.example/magic?token=abc&amp;state=x"' in html

    text, html = parts(verify)
    assert verify.message["Subject"] == "Confirm your email address"
    assert CODE in text and f"<strong>{CODE}</strong>" in html and "15 minutes" in text

    text, html = parts(notice)
    assert notice.message["Subject"] == "New sign-in from <Firefox>"
    assert "If it was not you: <act> & now." in text
    assert "<p>If it was not you: &lt;act&gt; &amp; now.</p>" in html and "<act>" not in html
    assert "<title>New sign-in from &lt;Firefox&gt;</title>" in html

    assert otp.message["Subject"] == "Your code to confirm a change"

    with dev_provider.app.app_context(), pytest.raises(UndefinedError, match="purpose"):
        dev_provider.op.delivery.send_email(to, "otp", {"code": CODE, "minutes": 5})  # a caller's bug


def test_starttls_with_verified_self_signed_certificate_and_auth(prod_provider, starttls_smtp):
    to = unique_email()
    with prod_provider.app.app_context():
        prod_provider.op.delivery.send_email(to, "verify_email", {"code": CODE, "minutes": 15})

    [received] = starttls_smtp.mailbox.to(to)
    assert received.tls, "the message must travel after STARTTLS"
    assert received.login == LoginPassword(SMTP_USER.encode(), SMTP_PASSWORD.encode())
    text, html = parts(received)
    assert CODE in text and CODE in html
    assert outbox_rows(prod_provider, to) == []  # production keeps nothing


def test_implicit_tls(prod_provider, implicit_tls_smtp, certificate):
    to = unique_email()
    email = {"host": "127.0.0.1", "port": implicit_tls_smtp.port, "security": "tls", "timeout": 5,
             "ca_file": str(certificate[0])}
    with prod_provider.app.app_context():
        delivery_for(prod_provider, dev_mode=False, email=email).send_email(
            to, "magic_link", {"url": "https://op.example/m/abc", "minutes": 10})
    [received] = implicit_tls_smtp.mailbox.to(to)
    assert received.tls and "https://op.example/m/abc" in parts(received)[0]

    del email["ca_file"]  # the system's CAs do not know the test certificate
    with prod_provider.app.app_context(), pytest.raises(DeliveryError, match="(?i)certificate verify failed"):
        untrusting = delivery_for(prod_provider, dev_mode=False, email=email)
        untrusting.attempt(untrusting.email(unique_email(), "magic_link", {"url": "https://op.example/m/abc",
                                                                           "minutes": 10}))


def test_tls_certificate_is_always_verified(prod_provider, starttls_smtp):
    to = unique_email()
    email = {"host": "127.0.0.1", "port": starttls_smtp.port, "security": "starttls", "timeout": 5,
             "username": SMTP_USER, "password": SMTP_PASSWORD}  # no ca_file: the system's CAs
    with prod_provider.app.app_context(), pytest.raises(DeliveryError, match="(?i)certificate verify failed"):
        untrusting = delivery_for(prod_provider, dev_mode=False, email=email)
        untrusting.attempt(untrusting.email(to, "verify_email", {"code": CODE, "minutes": 15}))
    assert starttls_smtp.mailbox.to(to) == []


def failures_logged(caplog) -> list[dict]:
    """The structured part of each failed try's log line."""
    return [record.delivery for record in caplog.records if hasattr(record, "delivery")]


def test_smtp_failures_are_logged_and_a_refused_recipient_is_not_tried_again(dev_provider, prod_provider,
                                                                            starttls_smtp, certificate, caplog):
    caplog.set_level(logging.INFO, logger="oidc_provider.delivery")
    refused = f"nobody-{uuid.uuid4().hex[:6]}@refused.example"
    with dev_provider.app.app_context():
        dev_provider.op.delivery.send_email(refused, "otp", {"code": CODE, "minutes": 10, "purpose": "sign in"})
    [kept] = outbox_rows(dev_provider, refused)  # dev_mode keeps it even though sending failed
    assert CODE in kept.body
    [failure] = failures_logged(caplog)  # a 5xx is final: one try
    assert failure["outcome"] == "failed" and failure["attempt"] == 1 and "550" in failure["error"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "550" in warnings[-1] and CODE not in warnings[-1] and refused not in warnings[-1]

    email = {"host": "127.0.0.1", "port": starttls_smtp.port, "security": "starttls", "timeout": 5,
             "username": SMTP_USER, "password": "wrong-password", "ca_file": str(certificate[0])}
    with prod_provider.app.app_context(), pytest.raises(DeliveryError, match="535") as failure:
        wrong = delivery_for(prod_provider, dev_mode=False, email=email)
        wrong.attempt(wrong.email(unique_email(), "otp", {"code": CODE, "minutes": 10, "purpose": "sign in"}))
    assert "wrong-password" not in str(failure.value) and failure.value.permanent

    closed = {"host": "127.0.0.1", "port": free_port(), "security": "none", "timeout": 2}
    with prod_provider.app.app_context(), pytest.raises(DeliveryError, match="ConnectionRefused") as failure:
        nowhere = delivery_for(prod_provider, dev_mode=False, email=closed)
        nowhere.attempt(nowhere.email(unique_email(), "otp", {"code": CODE, "minutes": 10, "purpose": "sign in"}))
    assert not failure.value.permanent  # the server may be back for the next try


# -- text messages and calls ------------------------------------------------------------

def test_sms_through_webhook(dev_provider, gateway):
    to = unique_phone()
    with dev_provider.app.app_context():
        dev_provider.op.delivery.send_sms(to, f"{CODE} is your sign-in code.")
    [request] = gateway.received
    assert request.path == "/hook"
    assert request.headers.get("Authorization") == f"Bearer {HOOK_TOKEN}"
    assert request.headers.get("Content-Type") == "application/json"
    assert request.json() == {"channel": "sms", "to": to, "text": f"{CODE} is your sign-in code."}
    [kept] = outbox_rows(dev_provider, to)
    assert (kept.channel, kept.subject, kept.body) == ("sms", None, f"{CODE} is your sign-in code.")


def test_voice_through_twilio(dev_provider, gateway):
    to = unique_phone()
    text = f"Your code is {spell_digits(CODE)}. <Goodbye> & thanks"
    with dev_provider.app.app_context():
        dev_provider.op.delivery.send_voice(to, text)
    [request] = gateway.received
    assert request.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Calls.json"
    assert request.headers.get("Authorization") == "Basic " + base64.b64encode(
        f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    assert request.headers.get("Content-Type") == "application/x-www-form-urlencoded"
    assert request.form() == {
        "To": to, "From": "+15550000",
        "Twiml": "<Response><Say>Your code is 4 8 2 9 1 3. &lt;Goodbye&gt; &amp; thanks</Say></Response>",
    }
    [kept] = outbox_rows(dev_provider, to)
    assert (kept.channel, kept.body) == ("voice", text)


def test_sms_through_twilio_and_voice_through_webhook(prod_provider, gateway):
    to = unique_phone()
    with prod_provider.app.app_context():
        prod_provider.op.delivery.send_sms(to, f"{CODE} is your code")
        prod_provider.op.delivery.send_voice(to, f"Your code is {spell_digits(CODE)}")
    sms, call = gateway.received
    assert sms.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    assert sms.headers.get("Authorization") == "Basic " + base64.b64encode(
        f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    assert sms.form() == {"To": to, "From": "+15550000", "Body": f"{CODE} is your code"}
    assert call.path == "/voice" and call.headers.get("Authorization") is None  # no token configured
    assert call.json() == {"channel": "voice", "to": to, "text": "Your code is 4 8 2 9 1 3"}
    assert outbox_rows(prod_provider, to) == []


def test_gateway_failures_are_tried_again_logged_and_never_show_secrets(dev_provider, prod_provider, gateway,
                                                                        caplog):
    caplog.set_level(logging.INFO, logger="oidc_provider.delivery")
    gateway.status = 500
    to = unique_phone()
    with dev_provider.app.app_context():
        dev_provider.op.delivery.send_sms(to, f"{CODE} is your code")
    tries = dev_provider.op.settings.delivery.attempts
    assert len(gateway.received) == tries  # a 5xx is tried again, up to delivery.attempts
    assert [row.body for row in outbox_rows(dev_provider, to)] == [f"{CODE} is your code"]  # one copy
    assert [(f["outcome"], f["attempt"]) for f in failures_logged(caplog)] == [
        *[("retry", n) for n in range(1, tries)], ("failed", tries)]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("via webhook failed" in line and "HTTP 500" in line for line in logged)
    assert not any(CODE in line or HOOK_TOKEN in line or to in line for line in logged)

    gateway.reset()
    caplog.clear()
    gateway.status = 400
    with prod_provider.app.app_context():
        with pytest.raises(DeliveryError, match="HTTP 400 .twilio error 21211.") as failure:
            prod_provider.op.delivery.attempt(prod_provider.op.delivery.text("sms", unique_phone(), "hello"))
        assert failure.value.permanent
        prod_provider.op.delivery.send_sms(unique_phone(), "hello")
    assert len(gateway.received) == 2  # the direct try, then one queued try: a 4xx is final
    assert [f["outcome"] for f in failures_logged(caplog)] == ["failed"]

    gateway.status, gateway.delay = 200, 1.0
    slow = {"gateway": "webhook", "url": f"{gateway.url}/hook", "timeout": 0.2}
    with prod_provider.app.app_context(), pytest.raises(DeliveryError, match="no answer within 0.2s") as failure:
        impatient = delivery_for(prod_provider, dev_mode=False, voice=slow)
        impatient.attempt(impatient.text("voice", unique_phone(), "hello"))
    assert not failure.value.permanent

    closed = {"gateway": "twilio", "url": f"http://127.0.0.1:{free_port()}", "account_sid": TWILIO_SID,
              "auth_token": TWILIO_TOKEN, "from_number": "+15550000", "timeout": 2}
    with prod_provider.app.app_context(), pytest.raises(DeliveryError, match="could not reach") as failure:
        nowhere = delivery_for(prod_provider, dev_mode=False, sms=closed)
        nowhere.attempt(nowhere.text("sms", unique_phone(), "hello"))
    assert TWILIO_TOKEN not in str(failure.value)


def test_bad_recipients_are_refused_before_sending(dev_provider, gateway, plain_smtp):
    with dev_provider.app.app_context():
        for send in (lambda: dev_provider.op.delivery.send_sms("5550123", "x"),
                     lambda: dev_provider.op.delivery.send_voice("+1 555 0123", "x"),
                     lambda: dev_provider.op.delivery.send_email("a@b.example\r\nBcc: c@d.example", "otp",
                                                                 {"code": CODE, "minutes": 1, "purpose": "x"})):
            with pytest.raises(DeliveryError):
                send()
    assert gateway.received == []


def test_spell_digits():
    assert spell_digits("123456") == "1 2 3 4 5 6"
    assert spell_digits("12 34") == "1 2 3 4"


# -- the development outbox -------------------------------------------------------------

def test_dev_outbox_command_and_page_show_newest_first(dev_provider, gateway):
    to = unique_phone()
    with dev_provider.app.app_context():
        dev_provider.op.delivery.send_sms(to, "first message 111111")
        time.sleep(0.01)
        dev_provider.op.delivery.send_sms(to, "second message 222222")
    delivered()

    base = dev_provider.base_dir
    config = base / "outbox-cli.yaml"
    config.write_text(json.dumps({"database_url": f"sqlite:///{base / 'oidc.db'}", "keys_dir": str(base / "keys"),
                                  "clients_file": str(base / "clients.yaml"), "dev_mode": True}))
    env = {key: value for key, value in os.environ.items() if key not in ("ISSUER", "DATABASE_URL", "REDIS_URL")}
    env.update(OIDC_PROVIDER_CONFIG=str(config), OIDC_PROVIDER_HOME=str(base))
    script = Path(sys.executable).with_name("oidc-provider")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from oidc_provider.cli import main; main()"]
    done = subprocess.run([*command, "outbox", "--to", to, "--limit", "5"], env=env, cwd=base,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count(f"sms    {to}") == 2
    assert out.index("second message 222222") < out.index("first message 111111")
    assert "UTC" in out

    done = subprocess.run([*command, "outbox", "--to", to, "--limit", "1"], env=env, cwd=base,
                          capture_output=True, text=True, timeout=60)
    assert "second message" in done.stdout and "first message" not in done.stdout

    page = requests.get(f"{dev_provider.url}/dev/outbox", params={"to": to}, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<th scope="col">Channel</th>' in page.text and "<caption" in page.text
    assert page.text.index("second message 222222") < page.text.index("first message 111111")
    everything = requests.get(f"{dev_provider.url}/dev/outbox", timeout=10).text
    assert "second message 222222" in everything


def test_dev_outbox_page_escapes_content(dev_provider, plain_smtp):
    to = unique_email()
    with dev_provider.app.app_context():
        dev_provider.op.delivery.send_email(to, "notice", {"subject": "<b>bold</b>", "text": "<script>x</script>"})
    delivered()
    page = requests.get(f"{dev_provider.url}/dev/outbox", params={"to": to}, timeout=10).text
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>" not in page


def test_dev_mode_without_transports_keeps_messages_only(dev_provider, gateway, plain_smtp):
    to_email, to_phone = unique_email(), unique_phone()
    delivered = len(plain_smtp.mailbox.all())
    with dev_provider.app.app_context():
        nothing_configured = delivery_for(dev_provider, dev_mode=True)
        assert nothing_configured.available("email") and nothing_configured.available("voice")
        nothing_configured.send_email(to_email, "otp", {"code": CODE, "minutes": 10, "purpose": "sign in"})
        nothing_configured.send_sms(to_phone, f"{CODE} by text")
        nothing_configured.send_voice(to_phone, f"{spell_digits(CODE)} by voice")
    assert len(plain_smtp.mailbox.all()) == delivered and gateway.received == []
    assert [row.channel for row in outbox_rows(dev_provider, to_email)] == ["email"]
    assert [(row.channel, row.body) for row in outbox_rows(dev_provider, to_phone)] == [
        ("sms", f"{CODE} by text"), ("voice", "4 8 2 9 1 3 by voice")]


def test_production_keeps_nothing_and_needs_a_transport(prod_provider, gateway, starttls_smtp):
    with prod_provider.app.app_context():
        delivery = prod_provider.op.delivery
        delivery.send_email(unique_email(), "otp", {"code": CODE, "minutes": 10, "purpose": "sign in"})
        delivery.send_sms(unique_phone(), "hello")
        delivery.send_voice(unique_phone(), "hello")
        delivered()
        assert db.session.execute(db.select(db.func.count()).select_from(OutboxMessage)).scalar() == 0

        unconfigured = delivery_for(prod_provider, dev_mode=False)
        assert not unconfigured.available("sms")
        with pytest.raises(DeliveryError, match="no sms transport is configured"):
            unconfigured.send_sms(unique_phone(), "hello")
        with pytest.raises(DeliveryError, match="no email transport is configured"):
            unconfigured.send_email(unique_email(), "otp", {"code": CODE, "minutes": 10, "purpose": "sign in"})
        assert db.session.execute(db.select(db.func.count()).select_from(OutboxMessage)).scalar() == 0
    assert requests.get(f"{prod_provider.url}/dev/outbox", timeout=10).status_code == 404


def test_a_message_the_store_cannot_keep_fails_at_once(tmp_path, plain_smtp, caplog):
    """The queue is kept in the store: when the store does not answer, sending fails at once with
    DeliveryError (a code's page says it could not send; a security notice is logged and the
    change stands), never with an error after the request's work is done."""
    closed = free_port()  # nothing listens there
    provider, stop = start_provider(tmp_path, "sqlite-sql", extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none", "timeout": 5},
        "store": {"backend": "redis", "redis_url": f"redis://127.0.0.1:{closed}/0", "timeout": 1}})
    try:
        with provider.app.test_request_context(), pytest.raises(DeliveryError, match="the store did not take it"):
            provider.op.delivery.send_email(unique_email(), "otp", {"code": CODE, "minutes": 10, "purpose": "sign in"})
        assert not any(CODE in record.getMessage() for record in caplog.records)
    finally:
        stop()


@pytest.mark.parametrize("backend", ["sqlite-sql", "postgres-redis"])
def test_outbox_table_on_each_database(tmp_path, backend):
    """Migration 0002 on SQLite and PostgreSQL (skips locally without PostgreSQL)."""
    provider, stop = start_provider(tmp_path, backend)
    try:
        to = unique_phone()
        with provider.app.app_context():
            provider.op.delivery.send_sms(to, "kept")  # dev_mode, no gateway: outbox only
        [row] = outbox_rows(provider, to)
        assert (row.channel, row.to, row.subject, row.body) == ("sms", to, None, "kept") and row.at > 0
    finally:
        stop()


# -- settings ---------------------------------------------------------------------------

def test_delivery_settings_are_validated_and_secrets_come_from_the_environment(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="sms.*account_sid, auth_token"):
        load_settings(None, {"sms": {"gateway": "twilio", "from_number": "+15550000"}})
    with pytest.raises(ConfigError, match="voice.*needs url"):
        load_settings(None, {"voice": {"gateway": "webhook"}})
    with pytest.raises(ConfigError, match="email.security"):
        load_settings(None, {"email": {"host": "smtp.example", "security": "ssl"}})
    with pytest.raises(ConfigError, match="clear"):  # no password over an unencrypted connection
        load_settings(None, {"email": {"host": "smtp.example", "security": "none", "username": "u"}})
    with pytest.raises(ConfigError, match="delivery.attempts"):
        load_settings(None, {"delivery": {"attempts": 0}})  # at least one try
    with pytest.raises(ConfigError, match="delivery.retries"):
        load_settings(None, {"delivery": {"retries": 3}})  # unknown keys are refused
    with pytest.raises(ConfigError, match="email.ca_file"):
        Delivery(load_settings(None, {"email": {"host": "smtp.example", "ca_file": "missing.pem"}}), tmp_path)

    monkeypatch.setenv("SMTP_PASSWORD", "from-env")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token-from-env")
    settings = load_settings(None)
    assert settings.email.password == "from-env" and settings.sms.auth_token == "token-from-env"
    assert "from-env" not in repr(settings)
    assert settings.email.effective_port == 587 and settings.sms.gateway == "none"
