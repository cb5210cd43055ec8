"""Recovery codes: their format and entropy; stored hashed and numbered, single use (also under
concurrency), only the next one accepted, a new set ending the old one, every use audited;
against the real databases (the migration that numbered the codes already saved too)."""

from __future__ import annotations

import hashlib
import math
import re
import threading
import uuid

import pytest

from oidc_provider.authn.factors import recovery_codes
from tests.conftest import BACKENDS, POSTGRES_ADMIN_URL, _postgres_database, require_service, start_provider

SHOWN = re.compile(r"[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}")


def test_a_code_carries_at_least_50_bits():
    assert len(set(recovery_codes.ALPHABET)) == len(recovery_codes.ALPHABET) == 32
    assert recovery_codes.LENGTH * math.log2(len(recovery_codes.ALPHABET)) >= 50
    codes = [recovery_codes.new_code() for _ in range(200)]
    assert len(set(codes)) == 200
    assert all(len(code) == recovery_codes.LENGTH and set(code) <= set(recovery_codes.ALPHABET) for code in codes)
    # every character of the alphabet turns up: the codes use all of it, not a part
    assert set("".join(codes)) == set(recovery_codes.ALPHABET)


def test_codes_are_shown_in_groups_and_read_back_however_they_are_typed():
    code = "0123456789ab"
    assert recovery_codes.shown(code) == "0123-4567-89ab"
    for typed in ("0123-4567-89ab", "0123 4567 89AB", " 012345678 9ab ", "O123-4567-89AB", "o123456789ab"):
        assert recovery_codes.normalize(typed) == code
    assert recovery_codes.normalize("I234-5678-9abc") == recovery_codes.normalize("l234-5678-9ABC") == "123456789abc"


@pytest.mark.parametrize("typed", ["", "0123-4567-89a", "0123-4567-89abc", "0123-4567-89au", "0123_4567_89ab",
                                   "０１２３４５６７８９ab"])
def test_anything_else_is_not_a_code(typed):
    assert recovery_codes.normalize(typed) is None


# -- the factor, against the real databases ----------------------------------------------------

@pytest.fixture(scope="module", params=list(BACKENDS))
def app(request, tmp_path_factory):
    running, stop = start_provider(tmp_path_factory.mktemp("recovery-unit"), request.param, extra_settings={
        "factors": ["password", "email-otp", "sms", "voice", "email", "totp", "recovery-code"]})
    yield running.app
    stop()


def new_user(app, email=None):
    from oidc_provider.cli import create_user

    with app.app_context():
        return create_user(f"rcv-{uuid.uuid4().hex[:8]}", "a long enough password", email=email).id


def load(user_id):
    from oidc_provider.extensions import db
    from oidc_provider.models import User

    return db.session.get(User, user_id)


def factor_of(app):
    return app.extensions["op"].factors.get("recovery-code")


def generate(app, user_id):
    with app.app_context():
        return factor_of(app).generate(load(user_id))


def use(app, user_id, code):
    with app.app_context():
        return factor_of(app).verify(load(user_id), {"code": code}, {"ip": "127.0.0.1"})


def remaining(app, user_id):
    with app.app_context():
        return factor_of(app).remaining(load(user_id))


def test_a_set_is_ten_codes_stored_only_as_keyed_hashes(app):
    from oidc_provider.extensions import db
    from oidc_provider.models import Authenticator

    user_id = new_user(app)
    codes = generate(app, user_id)
    assert len(codes) == 10 == app.extensions["op"].settings.totp_recovery.recovery_codes
    assert len(set(codes)) == 10 and all(SHOWN.fullmatch(code) for code in codes)
    with app.app_context():
        rows = db.session.execute(db.select(Authenticator).filter_by(user_id=user_id)).scalars().all()
        stored = " ".join(f"{row.secret} {row.lookup} {row.data} {row.name}" for row in rows)
        assert len(rows) == 10 and all(row.kind == "recovery-code" and row.confirmed for row in rows)
        assert sorted(row.number for row in rows) == list(range(1, 11))
        for code in codes:
            plain = recovery_codes.normalize(code)
            assert plain not in stored and code not in stored
            assert hashlib.sha256(plain.encode()).hexdigest() not in stored  # keyed, not a bare hash
        assert factor_of(app).available_for(load(user_id))


def test_a_code_works_once(app):
    user_id = new_user(app)
    codes = generate(app, user_id)
    assert use(app, user_id, codes[0].upper().replace("-", " ")).ok
    again = use(app, user_id, codes[0])
    assert not again.ok and again.reason == "unknown or used recovery code"
    assert remaining(app, user_id) == 9
    assert use(app, user_id, codes[1]).ok and remaining(app, user_id) == 8


def next_number(app, user_id):
    with app.app_context():
        return factor_of(app).next_number(load(user_id))


def test_only_the_next_code_works_and_one_added_comes_last(app):
    user_id = new_user(app)
    codes = generate(app, user_id)  # numbered 1..10 in this order
    assert next_number(app, user_id) == 1
    refused = use(app, user_id, codes[3])
    assert not refused.ok and refused.reason == "an unused recovery code, but not the next one"
    assert remaining(app, user_id) == 10 and next_number(app, user_id) == 1
    assert use(app, user_id, codes[0]).ok and next_number(app, user_id) == 2
    with app.app_context():
        number, added = factor_of(app).add_one(load(user_id))
    assert number == 11 and SHOWN.fullmatch(added)
    assert not use(app, user_id, added).ok
    for code in codes[1:]:
        assert use(app, user_id, code).ok
    assert next_number(app, user_id) == 11 and use(app, user_id, added).ok
    assert next_number(app, user_id) is None and remaining(app, user_id) == 0


def test_wrong_codes_and_other_peoples_codes_do_not_work(app):
    user_id, other_id = new_user(app), new_user(app)
    mine, theirs = generate(app, user_id), generate(app, other_id)
    assert use(app, user_id, theirs[0]).reason == "unknown or used recovery code"
    assert use(app, user_id, "aaaa-bbbb-cccc").reason == "unknown or used recovery code"
    assert use(app, user_id, "not a code").reason == "not a recovery code"
    assert remaining(app, user_id) == remaining(app, other_id) == 10
    assert use(app, other_id, theirs[0]).ok and mine


def test_the_same_code_used_concurrently_works_exactly_once(app):
    user_id = new_user(app)
    code = generate(app, user_id)[0]
    barrier, results = threading.Barrier(8), []

    def attempt():
        barrier.wait()
        results.append(use(app, user_id, code))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8 and sum(result.ok for result in results) == 1
    assert remaining(app, user_id) == 9


def test_a_new_set_ends_the_old_one(app):
    user_id = new_user(app)
    old = generate(app, user_id)
    assert use(app, user_id, old[0]).ok
    new = generate(app, user_id)
    assert remaining(app, user_id) == 10 and not set(old) & set(new)
    assert all(use(app, user_id, code).reason == "unknown or used recovery code" for code in old[1:4])
    assert use(app, user_id, new[0]).ok


def test_every_use_is_audited_with_what_is_left(app):
    from oidc_provider.extensions import db
    from oidc_provider.models import AuditEvent

    user_id = new_user(app)
    codes = generate(app, user_id)
    for code in codes[:7]:
        assert use(app, user_id, code).ok
    with app.app_context():
        events = db.session.execute(db.select(AuditEvent).filter_by(user_id=user_id, event="recovery_code.used")
                                    .order_by(AuditEvent.id)).scalars().all()
        assert [event.detail["remaining"] for event in events] == [9, 8, 7, 6, 5, 4, 3]
        assert factor_of(app).is_low(3) and not factor_of(app).is_low(4)


def test_without_codes_the_factor_is_not_offered(app):
    user_id = new_user(app)
    with app.app_context():
        assert not factor_of(app).available_for(load(user_id))
    codes = generate(app, user_id)
    with app.app_context():
        assert factor_of(app).remove(load(user_id)) == 10
        assert not factor_of(app).available_for(load(user_id))
    assert not use(app, user_id, codes[0]).ok


# -- migration 0008: the codes saved before numbering ------------------------------------------

@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_codes_saved_before_numbering_are_numbered_in_the_order_they_were_made(tmp_path, database):
    from sqlalchemy import text

    from oidc_provider import create_app
    from oidc_provider.cli import create_user, upgrade_database
    from oidc_provider.extensions import db
    from oidc_provider.oauth.keys import KeyFolder

    drop = None
    if database == "postgres":
        require_service("PostgreSQL", lambda: __import__("psycopg").connect(POSTGRES_ADMIN_URL, connect_timeout=3).close())
        url, drop = _postgres_database()
    else:
        url = f"sqlite:///{tmp_path / 'old.db'}"
    KeyFolder(tmp_path / "keys").generate(("RS256", "ES256"))
    (tmp_path / "clients.yaml").write_text("clients: []\n")
    app = create_app(None, {"database_url": url, "keys_dir": str(tmp_path / "keys"),
                            "clients_file": str(tmp_path / "clients.yaml")}, base_dir=tmp_path)
    try:
        upgrade_database(app, "0007")
        with app.app_context():
            ada, bob = (create_user(f"{name}-{uuid.uuid4().hex[:8]}", "a long enough password").id
                        for name in ("ada", "bob"))
            saved = [(ada, "recovery-code", "a1", 100.0), (ada, "recovery-code", "a2", 100.0),  # one set:
                     (ada, "totp", "app", 150.0), (ada, "recovery-code", "a3", 100.0),  # one created_at
                     (bob, "recovery-code", "b1", 120.0), (ada, "recovery-code", "a4", 300.0),  # an added one
                     (bob, "recovery-code", "b2", 120.0)]
            for user_id, kind, lookup, created_at in saved:
                db.session.execute(text(
                    "INSERT INTO authenticators (user_id, kind, name, data, lookup, confirmed, created_at) "
                    "VALUES (:user_id, :kind, '', '{}', :lookup, true, :created_at)"),
                    {"user_id": user_id, "kind": kind, "lookup": lookup, "created_at": created_at})
            db.session.commit()
        upgrade_database(app)
        with app.app_context():
            numbers = dict(db.session.execute(text("SELECT lookup, number FROM authenticators")).all())
            assert numbers == {"a1": 1, "a2": 2, "a3": 3, "a4": 4, "b1": 1, "b2": 2, "app": None}
            db.engine.dispose()
    finally:
        if drop:
            drop()
