"""The OpenAPI 3.1 description of the admin API (views/admin_api.py), served at
`GET /admin/v1/openapi.json`.

Built from the limits the views and the service enforce (imported from them), like the
direct API's (openapi.py), from the same pieces (openapi_common.py). What it says, the code does:

- Request bodies are JSON objects whose fields are all named here: an unknown field is
  refused (400), so a misspelt change is never silently ignored. POST bodies may be empty.
- Query parameters: each at most once; for text filters "" means not given; none may
  hold U+0000.
- Errors are `{"error", "error_description"}` and nothing else; each response lists the
  `error` values it can carry. 401 and 403 carry an RFC 6750 `WWW-Authenticate` challenge.
- A 500 is documented because a handler exists; the fuzz tests
  (tests/functional/test_admin_api_fuzz.py) fail on any.
"""

from __future__ import annotations

from .openapi_common import NO_NUL, error_answer, json_answer, openapi_document, ref, server_error_answer

PRINTABLE = "^[^\\u0000-\\u001f\\u007f]*$"  # the service also refuses other unprintable characters


def document(settings) -> dict:
    """The description for a provider with these settings (issuer URL)."""
    from . import admin
    from .audit_query import EVENT_PATTERN, MAX_LIMIT
    from .views import admin_api as api

    issuer = settings.issuer_url.rstrip("/")
    time = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC."}
    maybe_time = {"type": ["string", "null"], "format": "date-time", "description": "RFC 3339, UTC."}
    reason = {"type": ["string", "null"], "maxLength": admin.REASON_MAX, "pattern": PRINTABLE,
              "description": "Why: kept in the audit log with the change."}

    schemas = {
        "Lockout": {
            "type": "object", "additionalProperties": False,
            "required": ["locked", "locked_until", "failed_attempts", "max_failures"],
            "description": "Failed factor attempts in a row (any factor) lock the account at max_failures; "
                           "an admin can lock it too. locked_until 9999-12-31T23:59:59Z: until unlocked.",
            "properties": {"locked": {"type": "boolean"}, "locked_until": maybe_time,
                           "failed_attempts": {"type": "integer", "minimum": 0},
                           "max_failures": {"type": "integer", "minimum": 1}},
        },
        "User": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "username", "name", "email", "email_verified", "phone_number",
                         "phone_number_verified", "disabled", "created_at", "mfa_policy",
                         "mfa_enrollment_required", "lockout", "last_login"],
            "properties": {
                "id": {"type": "string", "description": "The user's sub."},
                "username": {"type": "string"}, "name": {"type": ["string", "null"]},
                "email": {"type": ["string", "null"]}, "email_verified": {"type": "boolean"},
                "phone_number": {"type": ["string", "null"]}, "phone_number_verified": {"type": "boolean"},
                "disabled": {"type": "boolean"}, "created_at": time,
                "mfa_policy": {"enum": [*admin.MFA_POLICIES, None],
                               "description": "The user's own MFA policy; null: the client's, else the global."},
                "mfa_enrollment_required": {"type": "boolean",
                                            "description": "The next sign-in must enroll a factor first."},
                "lockout": {"$ref": "#/components/schemas/Lockout"},
                "last_login": {"type": ["object", "null"], "additionalProperties": False,
                               "required": ["at", "ip", "country"],
                               "properties": {"at": maybe_time, "ip": {"type": ["string", "null"]},
                                              "country": {"type": ["string", "null"]}}},
            },
        },
        "UserPage": {
            "type": "object", "additionalProperties": False, "required": ["users", "next_cursor"],
            "properties": {"users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}},
                           "next_cursor": {"type": ["string", "null"],
                                           "description": "Send as cursor for the next page; null: the last."}},
        },
        "Factor": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "type", "label", "created_at", "last_used_at", "resettable", "detail"],
            "description": "Something that can authenticate the user.",
            "properties": {
                "id": {"type": "string", "description": "For DELETE .../factors/{factor_id}, e.g. totp:12, "
                                                        "phone, recovery-code, device:3, fed:1."},
                "type": {"type": "string", "description": "password, email, phone, totp, webauthn-key, "
                                                          "webauthn-platform, passkey, push, recovery-code, "
                                                          "trusted-device, fed."},
                "label": {"type": "string"}, "created_at": maybe_time, "last_used_at": maybe_time,
                "resettable": {"type": "boolean", "description": "false: the password (changed, not removed)."},
                "detail": {"type": "object", "description": "By type: name, address, number, remaining, "
                                                            "user_agent, last_ip, trusted_until, provider, subject."},
            },
        },
        "FactorList": {
            "type": "object", "additionalProperties": False, "required": ["factors"],
            "properties": {"factors": {"type": "array", "items": {"$ref": "#/components/schemas/Factor"}}},
        },
        "ResetResult": {
            "type": "object", "additionalProperties": False, "required": ["removed", "notified"],
            "properties": {"removed": {"type": "array", "items": {"$ref": "#/components/schemas/Factor"}},
                           "notified": {"type": "boolean",
                                        "description": "Whether the notice reached the verified email address."}},
        },
        "UserChanges": {
            "type": "object", "additionalProperties": False,
            "description": "Only the fields sent change; each change is audited.",
            "properties": {
                "mfa_policy": {"enum": [*admin.MFA_POLICIES, None],
                               "description": "null: back to the client's, else the global policy."},
                "mfa_enrollment_required": {"type": "boolean"},
                "reason": reason,
            },
        },
        "Lock": {
            "type": "object", "additionalProperties": False,
            "properties": {"minutes": {"type": ["integer", "null"], "minimum": 1,
                                       "maximum": admin.MAX_LOCK_MINUTES,
                                       "description": "How long; absent or null: until unlocked."},
                           "reason": reason},
        },
        "Unlock": {"type": "object", "additionalProperties": False, "properties": {"reason": reason}},
        "AuditEvent": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "at", "event", "user_id", "client_id", "ip", "detail"],
            "properties": {
                "id": {"type": "integer"}, "at": {**time, "description": "RFC 3339, UTC, milliseconds."},
                "event": {"type": "string", "description": "e.g. factor.failed, policy.decision (README)."},
                "user_id": {"type": ["string", "null"]},
                "client_id": {"type": ["string", "null"],
                              "description": "The client signed in to, or the admin client that acted."},
                "ip": {"type": ["string", "null"]},
                "detail": {"type": "object", "description": "By event: factor, reason, actor, acr, amr..."},
            },
        },
        "AuditPage": {
            "type": "object", "additionalProperties": False, "required": ["events", "next_cursor"],
            "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEvent"}},
                           "next_cursor": {"type": ["string", "null"],
                                           "description": "Send as cursor for older events; null: the last."}},
        },
    }

    def challenge(text: str) -> dict:
        return {"WWW-Authenticate": {"schema": {"type": "string"}, "description": text}}

    unauthorized = error_answer(
        "No Bearer token, or one that is invalid, expired, revoked, a user's, for another resource, or whose "
        "client is gone.", ["invalid_token"], headers=challenge('Bearer error="invalid_token" (RFC 6750).'))
    server_error = server_error_answer()

    def operation(summary: str, description: str, scope: str, answer: str, *, parameters=(), body=None,
                  not_found: str | None = "No such user (or factor).", invalid: str | None = None) -> dict:
        responses = {
            "200": json_answer(ref(answer), "Done."),
            "401": unauthorized,
            "403": error_answer(f"The client token lacks the scope {scope}.", ["insufficient_scope"],
                                headers=challenge(f'Bearer error="insufficient_scope", scope="{scope}".')),
            "500": server_error,
        }
        if invalid:
            responses["400"] = error_answer(invalid, ["invalid_request"])
        if not_found:
            responses["404"] = error_answer(not_found, ["not_found"])
        found = {"summary": summary, "description": description, "security": [{"clientToken": [scope]}],
                 "parameters": list(parameters), "responses": dict(sorted(responses.items()))}
        if body:
            schema, required = body
            found["requestBody"] = {"required": required, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{schema}"}}}}
        return found

    def query(name: str, schema: dict, description: str) -> dict:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    def text(limit: int, description: str) -> dict:
        return {"type": "string", "maxLength": limit, "pattern": NO_NUL, "description": description}

    user_id = {"name": "user_id", "in": "path", "required": True, "description": "The user's sub.",
               "schema": {"type": "string", "pattern": api.USER_ID.pattern}}
    factor_id = {"name": "factor_id", "in": "path", "required": True, "description": "From the factor list.",
                 "schema": {"type": "string", "minLength": 1, "maxLength": api.FACTOR_ID_MAX}}

    def limit(maximum: int) -> dict:
        return query("limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": 50},
                     "The most items on a page.")

    reason_query = query("reason", {**text(admin.REASON_MAX, "Why: kept in the audit log."),
                                    "pattern": PRINTABLE}, "Why: kept in the audit log.")
    malformed = "A malformed body or parameter, an unknown field, or a value out of range."

    paths = {
        "/admin/v1/users": {"get": operation(
            "Find users", "Users ordered by username; filter by exact username or email.", "admin:users",
            "UserPage", not_found=None, invalid=malformed, parameters=[
                query("username", text(api.USERNAME_MAX, "Exactly this username."), "Exactly this username."),
                query("email", text(api.EMAIL_MAX, "This primary email address (any case)."),
                      "This primary email address (any case)."),
                limit(api.USERS_LIMIT_MAX),
                query("cursor", text(api.USERNAME_MAX, "next_cursor of the previous page."),
                      "next_cursor of the previous page.")])},
        "/admin/v1/users/{user_id}": {
            "get": operation("A user", "The account, lockout state included.", "admin:users", "User",
                             parameters=[user_id]),
            "patch": operation(
                "Change a user's MFA settings",
                "Set the user's own MFA policy (never, adaptive, always; null for the default) and whether the "
                "next sign-in must enroll a factor first.", "admin:users", "User", parameters=[user_id],
                body=("UserChanges", True), invalid=malformed),
        },
        "/admin/v1/users/{user_id}/lock": {"post": operation(
            "Lock an account", "Every sign-in fails until the lock ends or an unlock; as after too many "
            "failed attempts.", "admin:users", "User", parameters=[user_id], body=("Lock", False),
            invalid=malformed)},
        "/admin/v1/users/{user_id}/unlock": {"post": operation(
            "Unlock an account", "Ends a lock and forgets the failed attempts in a row.", "admin:users", "User",
            parameters=[user_id], body=("Unlock", False), invalid=malformed)},
        "/admin/v1/users/{user_id}/factors": {
            "get": operation("A user's factors", "The password, verified email address and phone number, "
                             "authenticators, recovery codes, trusted browsers and linked accounts.",
                             "admin:users", "FactorList", parameters=[user_id]),
            "delete": operation(
                "Reset all factors", "Removes every authenticator and the recovery codes, marks the phone "
                "number unverified and stops trusting browsers; keeps the password, the email address and "
                "linked accounts. The user is told by email.", "admin:users", "ResetResult",
                parameters=[user_id, reason_query], invalid=malformed),
        },
        "/admin/v1/users/{user_id}/factors/{factor_id}": {"delete": operation(
            "Reset one factor", "Removes it (a contact point is marked unverified; a trusted browser is no "
            "longer trusted; a linked account is unlinked). The user is told by email.", "admin:users",
            "ResetResult", parameters=[user_id, factor_id, reason_query],
            invalid=malformed + " The password cannot be reset here.")},
        "/admin/v1/audit": {"get": operation(
            "The audit log", "Newest first. Every sign-in decision, factor success and failure, enrollment, "
            "removal and admin action.", "admin:audit", "AuditPage", not_found=None, invalid=malformed,
            parameters=[
                query("user", text(api.FILTER_MAX, "A user's sub."), "A user's sub."),
                query("client", text(api.FILTER_MAX, "A client id: the client signed in to, or the admin client "
                                                     "that acted."), "A client id."),
                query("event", {"type": "string", "pattern": EVENT_PATTERN.pattern,
                                "description": "An event name, or a prefix ending in * (factor.*)."},
                      "An event name, or a prefix ending in *."),
                query("since", {"type": "string", "maxLength": api.SINCE_MAX, "pattern": NO_NUL,
                                "description": "A duration back (90s, 15m, 1h, 7d, 2w) or an ISO 8601 time "
                                               "(UTC without an offset); anything else is refused."},
                      "A duration back or an ISO 8601 time."),
                limit(MAX_LIMIT),
                query("cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"}, "next_cursor of the previous "
                                                                                  "page.")])},
        "/admin/v1/openapi.json": {"get": {
            "summary": "This document", "security": [],
            "responses": {"200": {"description": "The OpenAPI 3.1 description of the admin API.",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}},
        }},
    }
    return openapi_document(
        info={
            "title": "Admin API",
            "version": "1",
            "description": (
                "Account administration for an admin backend: users, their factors, lockout, MFA policy and "
                "the audit log. Call it with a client access token (client_credentials grant at /oidc/token) "
                "whose scope holds admin:users (accounts and factors) or admin:audit (the audit log); a client "
                "gets them only when clients.yaml lists them for it. Users' tokens are refused, whatever their "
                "scope. Every change is audited with the admin client's id and IP.\n\n"
                "Request bodies are JSON objects with only the fields named; every error is "
                "{\"error\", \"error_description\"}."),
        },
        servers=[{"url": issuer, "description": "The provider."}],
        paths=paths,
        schemas=schemas,
        security_schemes={"clientToken": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A client access token (an at+jwt from the client_credentials grant at "
                           f"{issuer}/oidc/token, without a resource) whose scope holds the one each "
                           "operation lists."}},
    )
