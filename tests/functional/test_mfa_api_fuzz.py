"""The MFA API fuzzed from its own OpenAPI document (schemathesis), as the direct API is.

A provider runs with real SMTP and gateway servers; the document is loaded from the live
GET /mfa/openapi.json, checked against the routes, and every operation gets positive and
negative data with a Bearer taken from a pool: an mfa_token of a user with no
authenticator, one of a user with a verified phone (so challenges send codes), a user's
self-service access token with every MFA API scope and a fresh second factor, none, and
garbage. Positive bodies get real values mixed in at random (a real mfa_token, client id
and secret, an authenticator id of the caller) so they reach the deep paths.

Every answer must be documented (status, content type, headers, body) and never a 5xx;
errors are exactly {"error", "error_description"} with a documented code; negative data
must be refused (4xx).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from oidc_provider.openapi_mfa import document
from oidc_provider.settings.provider import MfaApiSettings
from tests import openapi_fuzz as fuzzing
from tests.conftest import start_provider
from tests.functional.test_mfa_api import (SECRET, add_clients, authenticators, enroll_totp, mfa_api_token,
                                           mfa_required)
from tests.functional.test_mfa_api import settings as provider_settings

MAX_EXAMPLES = 40
MAX_BOUNDARY_CASES = 200
SETTINGS = SimpleNamespace(issuer_url="http://127.0.0.1", mfa_api=MfaApiSettings())
DESCRIBED = document(SETTINGS)["paths"]
OPERATIONS = fuzzing.operations(DESCRIBED)
# negative data needs a body to make invalid (a path segment cannot be made invalid but empty)
FUZZED = fuzzing.fuzzed(DESCRIBED, invalidable=("requestBody",))


@pytest.fixture(scope="module")
def provider(tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("mfa-fuzz"), "sqlite-sql", extra_settings={
        **provider_settings(plain_smtp, gateway_server), "lockout": {"max_failures": 100}})
    add_clients(running)
    yield running
    stop()


@pytest.fixture(scope="module")
def tokens(provider) -> dict:
    """The Bearer pool and the real values positive cases may carry."""
    newcomer = provider.add_user(email_verified=True)
    phoned = provider.add_user(email_verified=True, phone="+15550009876", phone_verified=True)
    owner = provider.add_user(email_verified=True)
    app, _ = enroll_totp(provider, owner)
    access = mfa_api_token(provider, owner, app)
    first, second = mfa_required(provider, newcomer), mfa_required(provider, phoned)
    ids = [found["id"] for found in authenticators(provider, access).json()]
    phone_ids = [found["id"] for found in authenticators(provider, second).json()]
    return {"bearers": [first, second, access], "mfa_tokens": [first, second], "ids": ids,
            "phone_ids": phone_ids, "email": f"{owner['username']}@example.com"}


@pytest.fixture(scope="module")
def api_schema(provider):
    return fuzzing.live_schema(f"{provider.url}/mfa/openapi.json")


@pytest.fixture(scope="module")
def live_document(provider):
    return fuzzing.live_document(f"{provider.url}/mfa/openapi.json")


def test_the_document_describes_exactly_the_routes(provider, live_document):
    served = fuzzing.served_operations(provider.app, "mfa_api", keep=lambda rule: rule.endpoint != "mfa_api.elsewhere"
                                       and rule.rule.startswith("/mfa/"))
    assert served == set(fuzzing.operations(live_document["paths"])) == set(OPERATIONS)


def check_answer(doc: dict, path: str, method: str, response) -> None:
    status = response.status_code
    assert status < 500 or (status == 503 and method == "POST"), f"{status}: {response.text[:300]}"
    documented = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in documented, f"undocumented {status}: {response.text[:300]}"
    content_type = fuzzing.header(response, "Content-Type").partition(";")[0]
    if status == 204:
        return
    assert content_type in documented[str(status)].get("content", {}), (status, content_type)
    if status >= 400:
        fuzzing.check_error_body(doc, path, method, response)


def realistic(tokens: dict, path: str):
    """Real values a positive case may carry (mostly), each valid per the document."""
    if path == "/mfa/challenge":
        real = st.fixed_dictionaries(
            {"mfa_token": st.sampled_from(tokens["mfa_tokens"]), "client_id": st.just("ropc"),
             "client_secret": st.just(SECRET), "challenge_type": st.sampled_from(["oob", "otp oob", None]),
             "oob_channel": st.sampled_from([None, "sms", "voice", "email"])},
            optional={"authenticator_id": st.sampled_from(tokens["ids"] + tokens["phone_ids"])})
    elif path == "/mfa/associate":
        real = st.fixed_dictionaries(
            {"authenticator_types": st.sampled_from([["otp"], ["oob"]]),
             "oob_channels": st.sampled_from([["sms"], ["email"], ["auth0"], ["voice"]])},
            optional={"email": st.just(tokens["email"]), "phone_number": st.just("+15550001111"),
                      "client_id": st.just("ropc"), "client_secret": st.just(SECRET)})
    else:
        return st.just({})
    return st.one_of(real, st.just({}))  # Hypothesis favours the first branch


@pytest.mark.parametrize("path, method, mode", FUZZED)
def test_fuzz(api_schema, live_document, tokens, path, method, mode):
    operation = api_schema[path][method]
    positive = mode is GenerationMode.POSITIVE
    pool = [{"Authorization": f"Bearer {value}"} for value in tokens["bearers"]]
    credentials = st.sampled_from(pool + [{}, {"Authorization": "Bearer not-a-token"}]) if positive \
        else st.sampled_from(pool)
    replacements = realistic(tokens, path) if positive else st.just({})
    session = requests.Session()

    @fuzzing.fuzz_settings(MAX_EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode), auth=credentials, values=replacements,
           own_id=st.sampled_from(tokens["ids"]) if positive else st.none())
    def fuzz(case, auth, values, own_id):
        fuzzing.with_authorization(case, auth)
        if isinstance(case.body, dict):
            case.body.update(values)
        if own_id and case.path_parameters and "authenticator_id" in case.path_parameters and own_id[:1] in "er":
            case.path_parameters["authenticator_id"] = own_id  # only the email and recovery codes: keep the app
        fuzzing.call_and_check(case, session, live_document, check_answer, path, method, negative=not positive)

    fuzz()


@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_boundaries(api_schema, live_document, tokens, path, method):
    """Each constraint at and just past its edge (tests/openapi_fuzz.py)."""
    bearer = {"Authorization": f"Bearer {tokens['bearers'][0]}"}
    fuzzing.check_boundaries(api_schema, live_document, check_answer, path, method, bearer, MAX_BOUNDARY_CASES)
