"""One lockout across all factors: counted before checking, so parallel guesses cannot pass it,
and once locked even the right answer gets the same generic failure."""

import pytest

from tests.conftest import post, PASSWORD, UserAgent, start_provider, wrong_passwords_at_once
from tests.servers import code_in, text_of


@pytest.fixture(scope="module", params=["sqlite-sql", "postgres-redis"])
def provider(request, tmp_path_factory, plain_smtp):
    running, stop = start_provider(tmp_path_factory.mktemp("lockout"), request.param, extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none"},
        "lockout": {"max_failures": 3, "duration": 600},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000},
    })
    yield running
    stop()


def test_failures_of_different_factors_add_up_and_lock_the_account(provider, plain_smtp):
    person = provider.add_user(email_verified=True)
    agent = UserAgent(provider)
    page = agent.authorize(client_id="web")
    assert agent.login(page, person["username"], "wrong one").status_code == 401
    assert agent.login(page, person["username"], "wrong two").status_code == 401
    code_page = post(agent, page, "start", {"login": person["username"], "factor": "email-otp"})
    assert agent.submit(code_page, {"code": "000000"}).status_code == 401  # third failure: locked
    right_code = code_in(text_of(plain_smtp.mailbox.to(f"{person['username']}@example.com")[-1].message))
    assert agent.submit(code_page, {"code": right_code}).status_code == 401
    refused = agent.login(agent.authorize(client_id="web"), person["username"], PASSWORD)
    assert refused.status_code == 401 and "The username or password is not right" in refused.text
    assert agent.cookie("op_session") is None
    with provider.app.app_context():
        provider.op.lockout.unlock(person["sub"])  # what the admin CLI does
    assert "code" in UserAgent(provider).sign_in(person["username"], client_id="web")


def test_parallel_guesses_cannot_pass_the_limit(provider):
    person = provider.add_user()
    wrong_passwords_at_once(provider, person["username"], 8, timeout=30)
    with provider.app.app_context():
        from oidc_provider.extensions import db
        from oidc_provider.models import User, AuditEvent

        user = db.session.get(User, person["sub"])
        db.session.refresh(user)
        checked = db.session.execute(db.select(AuditEvent).filter_by(user_id=person["sub"], event="factor.failed")).scalars()
        reasons = [event.detail["reason"] for event in checked]
    assert user.locked_until is not None
    assert sum(1 for r in reasons if r != "account locked") <= 3  # only 3 passwords were ever checked
    assert reasons.count("account locked") >= 5
