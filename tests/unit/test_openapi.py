"""The direct API's OpenAPI document is valid OpenAPI 3.1 and true to the code: every route
is described, every described path exists, and the body schemas' limits are the code's."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import requests
import schemathesis

from oidc_provider.openapi import document
from tests.conftest import token_request

IGNORED_METHODS = {"HEAD", "OPTIONS"}  # added by Flask to every GET / every route
SETTINGS = SimpleNamespace(issuer_url="https://op.example", max_parameter_length=4096)


def documented(doc: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, operations in doc["paths"].items() for method in operations}


def routes(app, blueprint: str, strip: str = "") -> set[tuple[str, str]]:
    """(path, method) of every URL rule whose endpoint belongs to `blueprint`."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.partition(".")[0] != blueprint:
            continue
        assert rule.rule.startswith(strip), rule.rule
        for method in rule.methods - IGNORED_METHODS:
            found.add((rule.rule[len(strip):], method))
    return found


def test_the_document_is_valid_openapi_3_1():
    doc = document(SETTINGS)
    assert doc["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(doc).validate()  # the OpenAPI 3.1 meta-schema
    json.dumps(doc)  # plain JSON data


def test_every_route_is_documented_and_every_documented_path_exists(sqlite_provider):
    app = sqlite_provider.app
    doc = document(app.extensions["op"].settings)
    main = routes(app, "direct_api")
    cis = routes(app, "direct_api_cis", strip="/cis")
    assert main, "the direct_api blueprint has no routes?"
    assert main <= documented(doc), f"undocumented routes: {sorted(main - documented(doc))}"
    assert documented(doc) <= main, f"documented but not served: {sorted(documented(doc) - main)}"
    # the /cis server serves the same operations, except the document itself
    assert cis == main - {("/v1/openapi.json", "GET")}
    assert [server["url"] for server in doc["servers"]] == [sqlite_provider.url, f"{sqlite_provider.url}/cis"]


def test_the_document_is_served_cached(sqlite_provider):
    first = requests.get(f"{sqlite_provider.url}/v1/openapi.json", timeout=10)
    second = requests.get(f"{sqlite_provider.url}/v1/openapi.json", timeout=10)
    assert first.status_code == 200 and first.headers["Content-Type"] == "application/json"
    assert first.headers["Cache-Control"] == "public, max-age=300"
    assert first.content == second.content
    assert first.json() == json.loads(json.dumps(document(sqlite_provider.app.extensions["op"].settings)))
    assert requests.get(f"{sqlite_provider.url}/cis/v1/openapi.json", timeout=10).status_code == 404


def test_every_operation_lists_its_security_and_error_shape():
    doc = document(SETTINGS)
    scopes = set()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            security = operation["security"]
            if security:  # the JSON API: a client token with one scope; 401 and 403 documented
                (requirement,) = security
                scopes.update(requirement["clientToken"])
                assert {"400", "401", "403"} <= set(operation["responses"]), (path, method)
                assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and "application/json" in response.get("content", {}):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}, (path, status)
    assert scopes == {"auth.email", "auth.sms", "auth.password"}


# -- the limits in the schemas are the code's ------------------------------------------------

VALID = {"email": "someone@example.com", "phone_number": "+15550000000", "passcode": "123456",
         "password": "not the password", "redirect_uri": "https://domain.com/verify"}


def json_operations(doc: dict):
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                name = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                yield path, method, doc["components"]["schemas"][name]


@pytest.fixture(scope="module")
def api(sqlite_provider):
    token = token_request(sqlite_provider, {"grant_type": "client_credentials",
                                            "scope": "auth.email auth.sms auth.password"}, client="api-backend")
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    client = sqlite_provider.app.test_client()

    def post(path, body):
        answer = client.post(path, json=body, headers=headers)
        assert answer.status_code < 500, answer.get_data(as_text=True)
        return answer

    return post


def test_string_limits_and_required_fields_are_the_codes(api, sqlite_provider):
    doc = document(sqlite_provider.app.extensions["op"].settings)
    checked = 0
    for path, _method, schema in json_operations(doc):
        base = {name: VALID[name] for name in schema["required"]}
        if "username" in schema["properties"]:
            base["username"] = "someone"
        for name, field in schema["properties"].items():
            if "maxLength" not in field:
                continue
            limit = field["maxLength"]
            too_long = api(path, {**base, name: "x" * (limit + 1)})
            description = too_long.get_json()["error_description"]
            assert too_long.status_code == 400 and f"'{name}' must be a string of at most {limit}" in description, \
                (path, name, description)
            at_limit = api(path, {**base, name: "x" * limit}).get_json()
            assert "at most" not in at_limit.get("error_description", ""), (path, name, at_limit)
            with_nul = api(path, {**base, name: "a\x00b"}).get_json()
            assert with_nul["error"] == "invalid_request" and f"'{name}'" in with_nul["error_description"]
            checked += 1
        for name in schema["required"]:
            missing = api(path, {key: value for key, value in base.items() if key != name})
            assert missing.status_code == 400 and missing.get_json()["error_description"] == f"'{name}' is required."
            assert api(path, {**base, name: 7}).status_code == 400
        nested = schema["properties"]["client_attributes"]
        assert nested == {"$ref": "#/components/schemas/ClientAttributes"}
        for name, field in doc["components"]["schemas"]["ClientAttributes"]["properties"].items():
            over = api(path, {**base, "client_attributes": {name: "x" * (field["maxLength"] + 1)}})
            assert over.status_code == 400 and "'client_attributes'" in over.get_json()["error_description"]
            at = api(path, {**base, "client_attributes": {name: "x" * field["maxLength"], "other": [1]}}).get_json()
            assert "client_attributes" not in at.get("error_description", "")
        assert api(path, {**base, "client_attributes": "text"}).status_code == 400
        assert schema["additionalProperties"] is True  # and the code ignores unknown fields:
        assert "ignored" not in api(path, {**base, "ignored": {"any": "thing"}}).get_json().get("error_description", "")
    assert checked == 33  # every string field with a limit, in the six JSON bodies


def test_password_login_takes_username_or_else_email(api):
    base = {"password": "x", "redirect_uri": VALID["redirect_uri"]}
    assert api("/v1/auth/password/login", base).get_json()["error_description"] == "'email' is required."
    assert api("/v1/auth/password/login", {**base, "username": "", "email": "a@b.c"}).get_json()["error"] == \
        "invalid_grant"  # looked up by email, wrong password
    assert api("/v1/auth/password/login", {**base, "username": "u", "email": 5}).get_json()["error"] == \
        "invalid_grant"  # email not looked at
    assert api("/v1/auth/password/login", {**base, "username": 5}).get_json()["error"] == "invalid_request"
