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
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from oidc_provider.openapi_mfa import document
from oidc_provider.settings.provider import MfaApiSettings
from tests.conftest import start_provider
from tests.functional.test_mfa_api import (SECRET, add_clients, authenticators, enroll_totp, mfa_api_token,
                                           mfa_required)
from tests.functional.test_mfa_api import settings as provider_settings

MAX_EXAMPLES = 40
MAX_BOUNDARY_CASES = 200
SETTINGS = SimpleNamespace(issuer_url="http://127.0.0.1", mfa_api=MfaApiSettings())
DESCRIBED = document(SETTINGS)["paths"]
OPERATIONS = sorted((path, method.upper()) for path, operations in DESCRIBED.items() for method in operations)
# negative data needs a body to make invalid (a path segment cannot be made invalid but empty)
FUZZED = [pytest.param(path, method, mode, id=f"{method} {path} {mode.value}")
          for path, method in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
          if mode is GenerationMode.POSITIVE or "requestBody" in DESCRIBED[path][method.lower()]]
IGNORED_METHODS = {"HEAD", "OPTIONS"}


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
    schema = schemathesis.openapi.from_url(f"{provider.url}/mfa/openapi.json")
    schema.validate()
    schema.config.generation.update(with_security_parameters=False)
    return schema


@pytest.fixture(scope="module")
def live_document(provider):
    return requests.get(f"{provider.url}/mfa/openapi.json", timeout=10).json()


def test_the_document_describes_exactly_the_routes(provider, live_document):
    served = set()
    for rule in provider.app.url_map.iter_rules():
        if rule.endpoint.startswith("mfa_api.") and rule.endpoint != "mfa_api.elsewhere" \
                and rule.rule.startswith("/mfa/"):
            path = rule.rule.replace("<authenticator_id>", "{authenticator_id}")
            served |= {(path, method) for method in rule.methods - IGNORED_METHODS}
    documented = {(path, method.upper()) for path, ops in live_document["paths"].items() for method in ops}
    assert served == documented == set(OPERATIONS)


def documented_errors(doc: dict, path: str, method: str, status: int) -> list[str]:
    schema = doc["paths"][path][method.lower()]["responses"][str(status)]["content"]["application/json"]["schema"]
    return schema["allOf"][1]["properties"]["error"]["enum"]


def header(response, name: str) -> str:
    (value,) = response.headers.get(name.lower(), [""])
    return value


def check_answer(doc: dict, path: str, method: str, response) -> None:
    status = response.status_code
    assert status < 500 or (status == 503 and method == "POST"), f"{status}: {response.text[:300]}"
    documented = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in documented, f"undocumented {status}: {response.text[:300]}"
    content_type = header(response, "Content-Type").partition(";")[0]
    if status == 204:
        return
    assert content_type in documented[str(status)].get("content", {}), (status, content_type)
    if status >= 400:
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error", "error_description"}, body
        assert body["error"] in documented_errors(doc, path, method, status), (status, body)
        if status == 401:
            assert header(response, "WWW-Authenticate").startswith(f'Bearer error="{body["error"]}"')


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


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
    checks = CHECKS + ([] if positive else [negative_data_rejection])
    session = requests.Session()

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), auth=credentials, values=replacements,
           own_id=st.sampled_from(tokens["ids"]) if positive else st.none())
    def fuzz(case, auth, values, own_id):
        case.headers = {**{k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}, **auth}
        if isinstance(case.body, dict):
            case.body.update(values)
        if own_id and case.path_parameters and "authenticator_id" in case.path_parameters and own_id[:1] in "er":
            case.path_parameters["authenticator_id"] = own_id  # only the email and recovery codes: keep the app
        response = case.call(session=session, allow_redirects=False, timeout=15)
        if response.status_code == 414:
            reject()
        check_answer(live_document, path, method, response)
        case.validate_response(response, checks=checks, headers=case.headers)

    fuzz()


@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_boundaries(api_schema, live_document, tokens, path, method):
    """Each constraint at and just past its edge, positive and negative (schemathesis' coverage phase)."""
    operation = api_schema[path][method]
    cases = [case for case in api_schema.iter_coverage_cases(
        operation, generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=api_schema.config.generation) if case.method.upper() == method]
    assert cases
    session = requests.Session()
    bearer = {"Authorization": f"Bearer {tokens['bearers'][0]}"}
    for case in cases[:MAX_BOUNDARY_CASES]:
        case.headers = {**{k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}, **bearer}
        response = case.call(session=session, allow_redirects=False, timeout=15)
        if response.status_code == 414:
            continue
        negative = case.meta.generation.mode is GenerationMode.NEGATIVE
        try:
            check_answer(live_document, path, method, response)
            case.validate_response(response, checks=CHECKS + ([negative_data_rejection] if negative else []),
                                   headers=case.headers)
        except Exception as failure:
            scenario = getattr(case.meta.phase.data, "description", "")
            raise AssertionError(f"{scenario}: {case.body or case.path_parameters!r:.300}") from failure
