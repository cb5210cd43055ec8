"""The admin API fuzzed from its own OpenAPI document (schemathesis on Hypothesis), as the
direct API is (test_direct_api_fuzz.py).

The provider runs on SQLite; the document is loaded from the live GET
/admin/v1/openapi.json. Every operation gets positive data (valid per the document) and
negative data (invalid per it), positive cases with a full admin token, a token with only
admin:audit, a user's token carrying the admin scopes, none, or a bad one. Every answer must be:

- never a 5xx;
- a status code, content type, headers and body the document gives for that operation;
- in the documented error shape when it is an error (exactly `error` and
  `error_description`, an `error` the document lists for that status), with the RFC 6750
  challenge on 401 and 403;
- for negative data, a rejection (4xx).

Random ids never name a real user or factor, so positive cases get, at random, the real
user's sub and real factor ids: still valid per the document, and they reach the deeper
paths (listing, resetting, locking, changing the policy), whose answers are validated too.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from oidc_provider.admin_openapi import document
from oidc_provider.views.admin_api import USER_ID
from tests import openapi_fuzz as fuzzing
from tests.conftest import REDIRECT, UserAgent, start_provider, token_request

DESCRIBED = document(SimpleNamespace(issuer_url="http://127.0.0.1"))["paths"]
OPERATIONS = fuzzing.operations(DESCRIBED)
FUZZED = fuzzing.fuzzed(DESCRIBED)  # GET /admin/v1/openapi.json has nothing to make invalid
MAX_EXAMPLES = 30
MAX_BOUNDARY_CASES = 200


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    running, stop = start_provider(tmp_path_factory.mktemp("admin-fuzz"), "sqlite-sql")
    yield running
    stop()


@pytest.fixture(scope="module")
def real(provider) -> dict:
    """A user with several factors, and their ids: each valid per the document."""
    user = provider.add_user(username="fuzzed-admin", phone="+15550009999", phone_verified=True,
                             email_verified=True)
    return {"user_id": user["sub"], "username": user["username"],
            "factor_ids": ["phone", "email", "password", "recovery-code", "totp:1", "device:1"]}


def token(provider, scope: str) -> dict:
    answer = token_request(provider, {"grant_type": "client_credentials", "scope": scope}, client="admin-console")
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="module")
def credentials(provider, real) -> dict:
    params = UserAgent(provider).sign_in(real["username"], client_id="admin-console",
                                         scope="openid admin:users admin:audit")
    user_token = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                          "redirect_uri": REDIRECT}, client="admin-console").json()["access_token"]
    return {"admin": token(provider, "admin:users admin:audit"), "auditor": token(provider, "admin:audit"),
            "user": {"Authorization": f"Bearer {user_token}"}}


@pytest.fixture(scope="module")
def api_schema(provider):
    return fuzzing.live_schema(f"{provider.url}/admin/v1/openapi.json")


@pytest.fixture(scope="module")
def live_document(provider):
    return fuzzing.live_document(f"{provider.url}/admin/v1/openapi.json")


def test_every_route_is_described_and_every_description_served(provider, live_document):
    served = fuzzing.served_operations(provider.app, "admin_api")
    assert served == set(fuzzing.operations(live_document["paths"]))
    assert sorted(served) == OPERATIONS


def check_answer(doc: dict, path: str, method: str, response) -> None:
    status = response.status_code
    assert status < 500, f"{status}: {response.text[:300]}"
    documented = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in documented, f"undocumented {status}: {response.text[:300]}"
    assert fuzzing.header(response, "Content-Type").partition(";")[0] == "application/json"
    if status >= 400:
        fuzzing.check_error_body(doc, path, method, response, challenge_on=(401, 403))


@pytest.mark.parametrize("path, method, mode", FUZZED)
def test_fuzz(api_schema, live_document, credentials, real, path, method, mode):
    operation = api_schema[path][method]
    positive = mode is GenerationMode.POSITIVE
    admin = credentials["admin"]
    auth = st.sampled_from([admin, admin, admin, credentials["auditor"], credentials["user"], {},
                            {"Authorization": "Bearer not-a-token"}]) if positive else st.just(admin)
    realistic = st.booleans() if positive else st.just(False)
    session = requests.Session()

    @fuzzing.fuzz_settings(MAX_EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode), headers=auth, use_real=realistic,
           factor=st.sampled_from(real["factor_ids"]))
    def fuzz(case, headers, use_real, factor):
        fuzzing.with_authorization(case, headers)
        if use_real and case.path_parameters:
            case.path_parameters["user_id"] = real["user_id"]
            if "factor_id" in case.path_parameters:
                case.path_parameters["factor_id"] = factor
        fuzzing.call_and_check(case, session, live_document, check_answer, path, method, negative=not positive)

    fuzz()


@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_boundaries(api_schema, live_document, credentials, real, path, method):
    """Each constraint at and just past its edge (tests/openapi_fuzz.py), with the real user
    where the path names one, so the body and query checks are reached."""

    def real_user(case):
        # a valid user_id becomes the real user's; an invalid one (the negated part) stays
        if USER_ID.match(str((case.path_parameters or {}).get("user_id", "!"))):
            case.path_parameters["user_id"] = real["user_id"]

    fuzzing.check_boundaries(api_schema, live_document, check_answer, path, method, credentials["admin"],
                             MAX_BOUNDARY_CASES, prepare=real_user)
