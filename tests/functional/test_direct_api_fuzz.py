"""The direct API fuzzed from its own OpenAPI document (schemathesis on Hypothesis).

The provider runs as in test_direct_api.py (SQLite, real SMTP and SMS gateway servers);
the document is loaded from the live GET /v1/openapi.json. Every operation gets positive
data (valid per the document) and negative data (invalid per the document), each with a
valid client token, one lacking scopes, none, or a bad one. Every answer must be:

- never a 5xx; a 503 (`delivery_failed`) is documented for the sending endpoints only,
  and with working gateways it should not occur;
- a status code, content type, headers and body the document gives for that operation
  (schemathesis' conformance checks);
- in the documented error shape when it is an error: exactly `error` and
  `error_description`, with an `error` the document lists for that status;
- for negative data, a rejection (4xx), since data the document calls invalid must not
  be accepted.

Random data rarely names a real account or a registered redirect_uri, so positive cases
have some fields replaced, at random, by real ones (a registered redirect_uri, a real
user's email, phone, username and password, the real client_id): still valid per the
document, and they reach the deeper paths (sending, checking secrets, issuing codes,
mfa_required, the redirect into the browser flow), whose answers are validated too.

Bounded: MAX_EXAMPLES per operation and mode, no deadline, no example database.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from oidc_provider.openapi import document
from tests import openapi_fuzz as fuzzing
from tests.conftest import PASSWORD, start_provider, token_request

MAX_EXAMPLES = 40
MAX_BOUNDARY_CASES = 250
VERIFY = "https://domain.com/verify"
SENDING = {"/v1/auth/otp/email", "/v1/auth/otp/sms", "/v1/auth/links/email"}
DESCRIBED = document(SimpleNamespace(issuer_url="http://127.0.0.1", max_parameter_length=4096))["paths"]
OPERATIONS = fuzzing.operations(DESCRIBED)
FUZZED = fuzzing.fuzzed(DESCRIBED)  # GET /v1/openapi.json has nothing to make invalid


@pytest.fixture(scope="module")
def provider(tmp_path_factory, plain_smtp, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("fuzz"), "sqlite-sql", extra_settings={
        "email": {"host": "127.0.0.1", "port": plain_smtp.port, "security": "none"},
        "sms": {"gateway": "webhook", "url": f"{gateway_server.url}/sms"},
        "otp": {"resend_cooldown": 0, "per_ip_limit": 10_000},
        "lockout": {"max_failures": 100},  # wrong and right passwords alternate here
    })
    yield running
    stop()


@pytest.fixture(scope="module")
def real(provider) -> dict:
    """Field values that name real things; each is valid per the document."""
    phone = "+15550001234"
    user = provider.add_user(username="fuzzed", phone=phone, phone_verified=True, email_verified=True)
    return {"redirect_uri": VERIFY, "email": f"{user['username']}@example.com", "phone_number": phone,
            "username": user["username"], "password": PASSWORD, "client_id": "api-backend"}


def client_token(provider, scope: str) -> dict:
    answer = token_request(provider, {"grant_type": "client_credentials", "scope": scope}, client="api-backend")
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="module")
def bearer(provider):
    return client_token(provider, "auth.email auth.sms auth.password")


@pytest.fixture(scope="module")
def narrow(provider):
    """A valid client token with only auth.sms: 403 insufficient_scope elsewhere."""
    return client_token(provider, "auth.sms")


@pytest.fixture(scope="module")
def api_schema(provider):
    return fuzzing.live_schema(f"{provider.url}/v1/openapi.json")


@pytest.fixture(scope="module")
def live_document(provider):
    return fuzzing.live_document(f"{provider.url}/v1/openapi.json")


def test_the_live_document_describes_these_operations(live_document):
    served = sorted((path, method.upper()) for path, ops in live_document["paths"].items() for method in ops)
    assert served == OPERATIONS


def check_answer(doc: dict, path: str, method: str, response) -> None:
    status = response.status_code
    assert status < 500 or (status == 503 and path in SENDING), f"{status}: {response.text[:300]}"
    documented = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in documented, f"undocumented {status}"
    content_type = fuzzing.header(response, "Content-Type").partition(";")[0]
    assert content_type in documented[str(status)].get("content", {"": None}), (status, content_type)
    if content_type == "application/json" and status >= 400:
        fuzzing.check_error_body(doc, path, method, response)
    elif status >= 400:  # the two browser pages' HTML errors
        assert content_type == "text/html" and path.endswith(("/verify", "/webauthn")), (status, content_type)


@pytest.mark.parametrize("path, method, mode", FUZZED)
def test_fuzz(api_schema, live_document, bearer, narrow, real, path, method, mode):
    operation = api_schema[path][method]
    positive = mode is GenerationMode.POSITIVE
    # negative data is sent with the full token, or a 401 would answer it before the data is read
    credentials = st.sampled_from([bearer, bearer, narrow, {}, {"Authorization": "Bearer not-a-token"},
                                   {"Authorization": "Basic YXBpLWJhY2tlbmQ6eA=="}]) if positive else st.just(bearer)
    # only positive cases get real values: a negative case must stay invalid
    realistic = st.sets(st.sampled_from(sorted(real))) if positive else st.just(set())
    session = requests.Session()

    @fuzzing.fuzz_settings(MAX_EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode), auth=credentials, names=realistic)
    def fuzz(case, auth, names):
        fuzzing.with_authorization(case, auth)
        if isinstance(case.body, dict) and "application/json" in (case.media_type or ""):
            case.body.update({name: real[name] for name in names if name != "client_id"})
        if case.query is not None and path.endswith("/webauthn"):
            case.query.update({name: real[name] for name in names & {"client_id", "redirect_uri"}})
        fuzzing.call_and_check(case, session, live_document, check_answer, path, method, negative=not positive)

    fuzz()


@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_boundaries(api_schema, live_document, bearer, path, method):
    """Each constraint at and just past its edge (tests/openapi_fuzz.py)."""
    fuzzing.check_boundaries(api_schema, live_document, check_answer, path, method, bearer, MAX_BOUNDARY_CASES)
