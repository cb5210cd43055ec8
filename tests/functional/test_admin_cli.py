"""`oidc-provider users ...` for administrators: the real console script in a subprocess,
on the database of a live provider (both backends), beside the admin API it shares its
service with. Refusals are one clear message, never a traceback (conftest.run_cli)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

import oidc_provider

from tests.conftest import UserAgent, cli_home, run_cli, start_provider, token_request
from tests.servers import text_of


@pytest.fixture(scope="module", params=["sqlite-sql", "postgres-redis"])
def provider(request, tmp_path_factory, plain_smtp):
    running, stop = start_provider(tmp_path_factory.mktemp("admin-cli"), request.param, extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none"},
        "lockout": {"max_failures": 3, "duration": 600},
    })
    cli_home(running)
    yield running
    stop()


def cli(provider, *args, ok=True):
    return run_cli(provider.base_dir, *args, ok=ok)


@pytest.fixture
def person(provider):
    user = provider.add_user(phone="+15550177", phone_verified=True, email_verified=True)
    return user | {"email": f"{user['username']}@example.com"}


def admin_api(provider, method, path, **kwargs):
    token = token_request(provider, {"grant_type": "client_credentials", "scope": "admin:users"},
                          client="admin-console").json()["access_token"]
    answer = requests.request(method, f"{provider.url}/admin/v1{path}", timeout=15,
                              headers={"Authorization": f"Bearer {token}"}, **kwargs)
    assert answer.status_code == 200, answer.text
    return answer.json()


def shown(output: str) -> dict:
    """`users show` as label -> value."""
    return dict(re.findall(r"^([a-z ]+):\s+(.*)$", output, re.M))


def can_sign_in(provider, username) -> bool:
    agent = UserAgent(provider)
    page = agent.login(agent.authorize(client_id="web"), username)
    return page.status_code == 302


def test_a_lock_from_the_api_shows_in_the_cli_and_the_cli_unlocks(provider, person):
    admin_api(provider, "POST", f"/users/{person['sub']}/lock", json={"reason": "suspicious sign-ins"})
    state = shown(cli(provider, "users", "show", person["username"]).stdout)
    assert state["locked"] == "yes, until unlocked" and state["user"].startswith(person["username"])
    assert not can_sign_in(provider, person["username"])

    assert cli(provider, "users", "unlock", person["username"], "--reason", "verified by phone").stdout.strip() \
        == f"{person['username']} unlocked"
    assert shown(cli(provider, "users", "show", person["username"]).stdout)["locked"] == "no"
    assert can_sign_in(provider, person["username"])

    cli(provider, "users", "lock", person["username"], "--minutes", "30")
    state = admin_api(provider, "GET", f"/users/{person['sub']}")["lockout"]
    assert state["locked"] is True and state["locked_until"] < "9999"
    assert not can_sign_in(provider, person["username"])
    log = cli(provider, "audit", "--user", person["username"], "--event", "account.*").stdout.splitlines()
    assert [line.split()[1] for line in log] == ["account.locked", "account.unlocked", "account.locked"]
    assert "actor=\"admin-console\"" in log[0] and "admin-console" in log[0].split()[3]
    assert "actor=\"cli\"" in log[1] and 'reason="verified by phone"' in log[1]


def test_failed_attempts_show_in_the_cli(provider, person):
    agent = UserAgent(provider)
    for guess in ("one", "two"):
        agent.login(agent.authorize(client_id="web"), person["username"], guess)
    state = shown(cli(provider, "users", "show", person["username"]).stdout)
    assert state["failures"] == "2 in a row (locks at 3)" and state["locked"] == "no"
    agent.login(agent.authorize(client_id="web"), person["username"], "three")
    assert shown(cli(provider, "users", "show", person["email"]).stdout)["locked"].startswith("yes, until 20")


def test_factors_are_listed_and_reset(provider, person, plain_smtp):
    listing = cli(provider, "users", "factors", person["username"]).stdout
    assert re.search(r"^password .*Password   \(not reset here\)$", listing, re.M)
    assert re.search(r"^phone .*Phone number \+15550177$", listing, re.M)

    done = cli(provider, "users", "reset-factor", person["username"], "phone").stdout
    assert "removed phone: Phone number +15550177" in done and "was told by email" in done
    assert "Phone number +15550177" in text_of(plain_smtp.mailbox.to(person["email"])[-1].message)
    assert "phone" not in cli(provider, "users", "factors", person["username"]).stdout.split()
    assert admin_api(provider, "GET", f"/users/{person['sub']}")["phone_number_verified"] is False

    nothing = cli(provider, "users", "reset-factor", person["username"], "--all").stdout
    assert nothing.strip() == f"{person['username']} had nothing to reset"


@pytest.mark.parametrize("args, message", [
    (("users", "show", "nobody-here"), "no user 'nobody-here'"),
    (("users", "factors", "nobody-here"), "no user 'nobody-here'"),
    (("users", "reset-factor", "{user}"), "name one factor ID"),
    (("users", "reset-factor", "{user}", "phone", "--all"), "name one factor ID"),
    (("users", "reset-factor", "{user}", "totp:999"), "has no factor 'totp:999'"),
    (("users", "reset-factor", "{user}", "password"), "Password cannot be reset here"),
    (("users", "lock", "{user}", "--minutes", "0"), "0 is not in the range x>=1"),
    (("users", "policy", "{user}", "sometimes"), "'sometimes' is not one of"),
    (("users", "unlock", "{user}", "--reason", "a\tb"), "the reason must be at most 256 printable characters"),
    (("audit", "--since", "yesterday"), "is neither a duration"),
    (("audit", "--event", "Not An Event"), "event: an event name"),
])
def test_refusals_are_clear_messages(provider, person, args, message):
    failed = cli(provider, *(arg.format(user=person["username"]) for arg in args), ok=False)
    assert message in failed.stderr, failed.stderr


def test_policy_and_enrollment(provider, person):
    cli(provider, "users", "policy", person["username"], "always")
    cli(provider, "users", "require-enrollment", person["username"])
    state = shown(cli(provider, "users", "show", person["username"]).stdout)
    assert state["mfa policy"] == "always" and state["enrollment"] == "required at the next sign-in"
    assert not can_sign_in(provider, person["username"])  # a second factor is asked for now
    user = admin_api(provider, "GET", f"/users/{person['sub']}")
    assert user["mfa_policy"] == "always" and user["mfa_enrollment_required"] is True

    cli(provider, "users", "policy", person["username"], "default")
    cli(provider, "users", "require-enrollment", person["username"], "--off")
    state = shown(cli(provider, "users", "show", person["username"]).stdout)
    assert state["mfa policy"].startswith("default") and state["enrollment"] == "not required"
    assert can_sign_in(provider, person["username"])


def test_without_a_database_the_cli_says_what_to_do(tmp_path):
    home = tmp_path / "base"
    (home / "config").mkdir(parents=True)
    (home / "config" / "provider.yaml").write_text(
        f"issuer: http://127.0.0.1:5999\ndatabase_url: sqlite:///{home / 'oidc.db'}\nkeys_dir: keys\n")
    (home / "config" / "clients.yaml").write_text("clients: []\n")
    run_cli(home, "keys", "generate")
    for args in (("users", "show", "someone"), ("audit",)):
        assert "run 'oidc-provider db upgrade'" in run_cli(home, *args, ok=False).stderr


def test_the_models_and_the_migrations_agree(provider):
    """`db upgrade` (every migration) makes exactly the tables and columns the models declare."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from oidc_provider.extensions import db

    with provider.app.app_context(), db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
        revision = MigrationContext.configure(connection).get_current_revision()
    assert revision == sorted(p.name[:4] for p in (Path(oidc_provider.__file__).parent / "migrations" / "versions").glob("0*.py"))[-1]
    assert differences == []
