"""What the OpenAPI fuzz tests of the JSON APIs share (test_direct_api_fuzz.py,
test_mfa_api_fuzz.py, test_admin_api_fuzz.py): the operations a document describes, the
live document loaded into schemathesis, the Bearer header swapped into a generated case,
the error-shape check, and the boundary run (schemathesis' coverage phase).

Each test module keeps what is its API's own: the Bearer pool, the real values mixed
into positive cases, and which statuses and content types an answer may have."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, reject, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def operations(paths: dict) -> list[tuple[str, str]]:
    """(path, METHOD) of every operation a document's `paths` describes, sorted."""
    return sorted((path, method.upper()) for path, described in paths.items() for method in described)


def fuzzed(paths: dict, invalidable=("parameters", "requestBody")) -> list:
    """The test_fuzz parameters: each operation in positive mode, and in negative mode where
    it has something (one of `invalidable`) that negative data can make invalid."""
    return [pytest.param(path, method, mode, id=f"{method} {path} {mode.value}")
            for path, method in operations(paths) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            if mode is GenerationMode.POSITIVE or set(invalidable) & set(paths[path][method.lower()])]


def served_operations(app, blueprint: str, keep=lambda rule: True) -> set[tuple[str, str]]:
    """(path, METHOD) of the blueprint's routes, with `<name>` written as OpenAPI's `{name}`."""
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.partition(".")[0] == blueprint and keep(rule):
            path = rule.rule.replace("<", "{").replace(">", "}")
            served |= {(path, method) for method in rule.methods - IGNORED_METHODS}
    return served


def live_schema(url: str):
    """The served document for schemathesis; the Authorization header is the test's to set
    (valid, missing or bad), not generated from the document's security scheme."""
    schema = schemathesis.openapi.from_url(url)
    schema.validate()
    schema.config.generation.update(with_security_parameters=False)
    return schema


def live_document(url: str) -> dict:
    return requests.get(url, timeout=10).json()


def fuzz_settings(max_examples: int):
    """Bounded runs: no deadline, no example database, no shrinking."""
    return settings(max_examples=max_examples, deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


def checks_for(negative: bool) -> list:
    """Data the document calls invalid must also be refused (4xx)."""
    return CHECKS + ([negative_data_rejection] if negative else [])


def with_authorization(case, auth: dict) -> None:
    """The case's headers with its Authorization (if any) replaced by `auth`'s."""
    headers = {key: value for key, value in (case.headers or {}).items() if key.lower() != "authorization"}
    case.headers = {**headers, **auth}


def refused_request_line(response) -> bool:
    """Werkzeug's HTTP server refused an over-long request line (414): not the API's answer."""
    if response.status_code != 414:
        return False
    assert len(response.request.url) > 8000
    return True


def call_and_check(case, session, doc: dict, check_answer, path: str, method: str, negative: bool) -> None:
    """Send a generated case; its answer must pass `check_answer(doc, path, method, response)`
    and schemathesis' checks. An over-long request line is not an example (Hypothesis' reject)."""
    response = case.call(session=session, allow_redirects=False, timeout=15)
    if refused_request_line(response):
        reject()
    check_answer(doc, path, method, response)
    case.validate_response(response, checks=checks_for(negative), headers=case.headers)


def header(response, name: str) -> str:
    """schemathesis' Response: lower-case names, lists of values."""
    (value,) = response.headers.get(name.lower(), [""])
    return value


def documented_errors(doc: dict, path: str, method: str, status: int) -> list[str]:
    schema = doc["paths"][path][method.lower()]["responses"][str(status)]["content"]["application/json"]["schema"]
    return schema["allOf"][1]["properties"]["error"]["enum"]


def check_error_body(doc: dict, path: str, method: str, response, challenge_on=(401,)) -> None:
    """Exactly {"error", "error_description"}, strings, an error the document lists for the
    status; on `challenge_on` statuses a Bearer challenge naming that error (RFC 6750 3)."""
    status, body = response.status_code, response.json()
    assert isinstance(body, dict) and set(body) == {"error", "error_description"}, body
    assert isinstance(body["error"], str) and isinstance(body["error_description"], str), body
    assert body["error"] in documented_errors(doc, path, method, status), (status, body)
    if status in challenge_on:
        challenge = header(response, "WWW-Authenticate")
        expected = f'Bearer error="{body["error"]}"'
        assert challenge == expected or challenge.startswith(f"{expected}, "), challenge


def check_boundaries(api_schema, doc: dict, check_answer, path: str, method: str, auth: dict, limit: int,
                     prepare=lambda case: None) -> None:
    """schemathesis' coverage phase: each constraint at and just past its edge (maxLength,
    maxLength + 1, missing required members, wrong types, enum values...), positive and
    negative, sent with `auth` after `prepare(case)`; each answer must pass
    `check_answer(doc, path, method, response)` and schemathesis' checks. Random generation rarely lands on an
    edge; this is where a limit that differs between document and code shows."""
    cases = [case for case in api_schema.iter_coverage_cases(
        api_schema[path][method], generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=api_schema.config.generation)
        # other methods on the path (405) are answered by the app's handler, not by the API's
        if case.method.upper() == method]
    assert cases
    session = requests.Session()
    for case in cases[:limit]:
        prepare(case)
        with_authorization(case, auth)
        response = case.call(session=session, allow_redirects=False, timeout=15)
        if refused_request_line(response):
            continue
        negative = case.meta.generation.mode is GenerationMode.NEGATIVE
        try:
            check_answer(doc, path, method, response)
            case.validate_response(response, checks=checks_for(negative), headers=case.headers)
        except Exception as failure:
            scenario = getattr(case.meta.phase.data, "description", "")
            raise AssertionError(f"{scenario}: {case.path_parameters or ''} "
                                 f"{case.body or case.query!r:.300}") from failure
