"""A busy provider outgrows 32-bit integers: every refresh and sign-in adds rows, so ids pass
2^31, and a refresh token family that ends after 19 January 2038 has a Unix time past 2^31.
Both are stored and served, on each backend (PostgreSQL's int4 would refuse them)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from tests.conftest import REDIRECT, UserAgent, register_clients, start_provider, token_request

PAST_INT32 = 2**31 + 1000
YEAR = 365 * 86400


@pytest.fixture(scope="module", params=["sqlite-sql", "postgres-redis"])
def provider(request, tmp_path_factory):
    """A provider of this module's own: the rows standing for 2^31 earlier ones stay in it."""
    running, stop = start_provider(tmp_path_factory.mktemp("long-lived"), request.param)
    yield running
    stop()


def test_row_ids_past_two_to_the_31_keep_coming(provider, user):
    from oidc_provider.extensions import db
    from oidc_provider.models import AuditEvent, RefreshToken

    with provider.app.app_context():
        for model in (RefreshToken, AuditEvent):  # as if 2^31 rows had come and gone
            table = model.__table__
            db.session.execute(table.insert().values(id=PAST_INT32, **_filler(model)))
            if provider.backend.startswith("postgres"):
                db.session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), {PAST_INT32})"))
        db.session.commit()
    first = _signed_in_refresh_token(provider, user, "web")
    fast = token_request(provider, {"grant_type": "refresh_token", "refresh_token": first})
    full = token_request(provider, {"grant_type": "refresh_token", "refresh_token": fast.json()["refresh_token"],
                                    "full_way": "1"})  # an unknown parameter: the Authlib grant answers
    assert fast.status_code == full.status_code == 200, (fast.text, full.text)
    with provider.app.app_context():
        assert db.session.scalar(select(func.max(RefreshToken.id))) > PAST_INT32 + 2  # the code's, and two rotations
        assert db.session.scalar(select(func.max(AuditEvent.id))) > PAST_INT32


def test_a_family_ending_after_2038_is_stored_and_rotates(provider, user):
    from oidc_provider.extensions import db
    from oidc_provider.models import RefreshToken

    register_clients(provider, [{"client_id": "decades", "redirect_uris": [REDIRECT], "first_party": True,
                                 "grant_types": ["authorization_code", "refresh_token"],
                                 "scopes": ["openid", "offline_access"], "refresh_token_lifetime": 15 * YEAR}])
    token = _signed_in_refresh_token(provider, user, "decades")
    for extra in ({}, {"full_way": "1"}):  # the fast path's rotation, then the Authlib grant's
        answer = token_request(provider, {"grant_type": "refresh_token", "refresh_token": token, **extra}, "decades")
        assert answer.status_code == 200, answer.text
        token = answer.json()["refresh_token"]
    with provider.app.app_context():
        ends = db.session.scalars(select(RefreshToken.expires_at).where(RefreshToken.client_id == "decades")).all()
    assert len(ends) == 3 and all(end > 2**31 for end in ends)


def _signed_in_refresh_token(provider, user, client_id: str) -> str:
    code = UserAgent(provider).sign_in(user["username"], client_id=client_id, scope="openid offline_access")["code"]
    answer = token_request(provider, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
                           client_id)
    assert answer.status_code == 200, answer.text
    return answer.json()["refresh_token"]


def _filler(model) -> dict:
    """The required columns of a row that stands for the ones before it."""
    if model.__tablename__ == "refresh_tokens":
        return {"token_hash": "0" * 64, "family_id": "gone", "client_id": "web", "user_id": "gone", "scope": "",
                "resources": [], "auth": {}, "issued_at": 0, "expires_at": 0}
    return {"at": 0.0, "event": "test.filler", "detail": {}}
