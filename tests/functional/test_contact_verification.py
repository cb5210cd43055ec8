"""Only verified contact points are factors; users verify them with a code, operators by CLI."""

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import UserAgent
from tests.servers import code_in


@pytest.fixture(scope="module")
def provider(tmp_path_factory, gateway_server, plain_smtp):
    from tests.conftest import start_provider

    running, stop = start_provider(tmp_path_factory.mktemp("contact"), "sqlite-sql", extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none"},
        "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/sms"},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000},
    })
    yield running
    stop()


def texts_to(gateway, number):
    return [r.json()["text"] for r in gateway.received if r.json().get("to") == number]


def test_a_user_confirms_a_phone_number_and_it_becomes_a_factor(provider, gateway_server):
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    person = provider.add_user(phone=phone)
    agent = UserAgent(provider)
    assert agent.go(f"{provider.url}/account/contact").status_code == 401  # signed out
    agent.sign_in(person["username"], client_id="web")

    page = agent.go(f"{provider.url}/account/contact")
    assert 'data-channel="phone"' in page.text and "Send a code to confirm" in page.text
    sent = agent.go(f"{provider.url}/account/contact/phone/send", "POST", {"csrf_token": agent.csrf(page)})
    code = code_in(texts_to(gateway_server, phone)[-1])
    confirm = f"{provider.url}/account/contact/phone/confirm"
    wrong = agent.go(confirm, "POST", {"csrf_token": agent.csrf(sent), "code": f"{(int(code) + 1) % 10**6:06d}"})
    assert wrong.status_code == 401
    done = agent.go(confirm, "POST", {"csrf_token": agent.csrf(sent), "code": code})
    assert done.status_code == 200 and "Confirmed" in done.text.split('data-channel="phone"')[1]

    # the number now receives sign-in codes
    fresh = UserAgent(provider)
    page = fresh.authorize(client_id="web")
    before = len(texts_to(gateway_server, phone))  # nothing went out before it was confirmed
    start = re.search(r'action="(/interaction/[^"]+/start)"', page.text).group(1)
    fresh.go(provider.url + start, "POST", {"csrf_token": fresh.csrf(page), "login": person["username"],
                                            "factor": "sms"})
    assert len(texts_to(gateway_server, phone)) == before + 1


def test_operators_mark_contact_points_with_the_cli(tmp_path):
    home = tmp_path
    (home / "config").mkdir()
    (home / "config" / "provider.yaml").write_text(f"database_url: sqlite:///{home}/oidc.db\n")
    (home / "config" / "clients.yaml").write_text("clients: []\n")
    env = {**os.environ, "OIDC_PROVIDER_HOME": str(home), "OIDC_PROVIDER_CONFIG": str(home / "config" / "provider.yaml")}
    cli = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "oidc-provider")

    def run(*args, stdin=""):
        return subprocess.run([cli, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)

    assert run("keys", "generate").returncode == 0
    assert run("db", "upgrade").returncode == 0
    assert run("users", "add", "bob", "--email", "bob@example.com", "--phone", "+15550199",
               "--password-stdin", stdin="long enough password\n").returncode == 0
    assert "email verified, phone unverified" in run("users", "verify", "bob", "--email").stdout
    result = run("users", "verify", "bob", "--phone")
    assert "email verified, phone verified" in result.stdout
    assert run("users", "verify", "nobody", "--phone").returncode != 0
    listing = run("users", "list").stdout
    assert "bob@example.com ✓" in listing and "+15550199 ✓" in listing
