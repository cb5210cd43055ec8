"""The pieces every OpenAPI 3.1 description here is built from (openapi.py for the direct
API, openapi_mfa.py, admin_openapi.py): string members as the views read them, the error
shape the views answer (views/api_common.py), and the document around the paths."""

from __future__ import annotations

import copy

OPENAPI_VERSION = "3.1.0"
NO_NUL = "^[^\\u0000]*$"  # an ECMA-262 regular expression: no U+0000 anywhere
ERROR_SCHEMA = "#/components/schemas/Error"
HTML = {"text/html": {"schema": {"type": "string"}}}
# components.schemas.Error: what every error answer is
ERROR = {
    "type": "object", "required": ["error", "error_description"], "additionalProperties": False,
    "properties": {"error": {"type": "string", "description": "A stable code."},
                   "error_description": {"type": "string", "description": "For developers; may change."}},
}


def text_schema(limit: int, description: str, required: bool = True) -> dict:
    """A string member as views/api_common.text_member reads it."""
    if required:
        return {"type": "string", "minLength": 1, "maxLength": limit, "pattern": NO_NUL, "description": description}
    return {"type": ["string", "null"], "maxLength": limit, "pattern": NO_NUL,
            "description": description + " Absent, null and \"\" all mean not given."}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_answer(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_answer(description: str, codes: list[str], headers: dict | None = None, html: bool = False) -> dict:
    """An error response whose `error` is one of `codes`; `html`: a browser page may get an
    HTML page instead."""
    schema = {"allOf": [{"$ref": ERROR_SCHEMA}, {"properties": {"error": {"enum": codes}}}]}
    response = json_answer(schema, description)
    if html:
        response["content"] = {**HTML, **response["content"]}
    if headers:
        response["headers"] = headers
    return response


def server_error_answer() -> dict:
    return error_answer("Unexpected failure (a bug; logged with the incident id).", ["server_error"])


def name_operations(paths: dict) -> None:
    """An operationId for every operation that has none: the method and the path's words,
    e.g. postV1AuthOtpEmailSend, deleteMfaAuthenticatorsAuthenticatorId."""
    for path, operations in paths.items():
        for method, operation in operations.items():
            operation.setdefault("operationId", method + "".join(
                part.strip("{}").capitalize() for part in path.replace(".", "/").replace("_", "/").split("/") if part))


def openapi_document(info: dict, servers: list[dict], paths: dict, schemas: dict, security_schemes: dict) -> dict:
    """The whole description, a deep copy so that shared pieces are not aliased in it."""
    name_operations(paths)
    return copy.deepcopy({
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": info,
        "servers": servers,
        "paths": paths,
        "components": {"schemas": {"Error": ERROR, **schemas}, "securitySchemes": security_schemes},
    })
