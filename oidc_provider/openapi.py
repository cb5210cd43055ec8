"""The OpenAPI 3.1 description of the direct API (views/direct_api.py), served at
`GET /v1/openapi.json`.

Built from the same limits the views enforce (imported from them), so a changed limit
changes the document too. What it says, it says because the code does it:

- Paths are the `/v1/...` ones. The same API is also mounted under `/cis` (the Transmit
  guide's URLs); that copy is the document's second server, `{issuer}/cis`, rather than a
  second set of paths: same operations, same schemas. `/v1/openapi.json` itself exists
  only under the first server.
- Request bodies are JSON objects. Fields not named here are ignored, not refused, hence
  `additionalProperties: true`. A string field that is absent, null or "" counts as not
  given; a required one must be a non-empty string. No string may hold U+0000 (the
  `pattern`); strings with unpaired surrogates (possible in JSON text, outside JSON Schema's
  notion of a string) are refused with 400 too.
- Errors are `{"error", "error_description"}` and nothing else; each response lists the
  `error` values it can carry. 401 carries `WWW-Authenticate: Bearer error="invalid_token"`.
- The two pages a person's browser sees (the magic link landing and GET /webauthn) answer
  HTML errors, or the JSON shape when the request prefers `application/json`.
- A 500 (`server_error`) is documented because the code has a handler for it; it is a bug
  whenever it happens, and the fuzz tests (tests/functional/test_direct_api_fuzz.py) fail
  on any.
"""

from __future__ import annotations

from .openapi_common import (HTML, NO_NUL, error_answer, json_answer, openapi_document, ref,
                             server_error_answer, text_schema)


def _body(required: list[str], properties: dict, description: str, **extra) -> dict:
    return {"type": "object", "description": description + " Fields not named here are ignored.",
            "required": required, "properties": properties, "additionalProperties": True, **extra}


def document(settings) -> dict:
    """The description for a provider with these settings (issuer URL, parameter limit)."""
    from .views import direct_api as api

    issuer = settings.issuer_url.rstrip("/")
    limit = settings.max_parameter_length

    attributes = {
        "type": ["object", "null"],
        "description": "Who the end user is (policy and audit). Other members are ignored.",
        "properties": {
            "user_agent": {"type": "string", "maxLength": api.USER_AGENT_MAX, "pattern": NO_NUL,
                           "description": "The end user's browser or app."},
            "ip_address": {"type": "string", "maxLength": api.IP_ADDRESS_MAX, "pattern": NO_NUL,
                           "description": "The end user's IP address; the policy treats an unparsable value as "
                                          "unknown. Without it the calling backend's address is used."},
        },
        "additionalProperties": True,
    }
    transaction = {
        "redirect_uri": text_schema(api.TEXT_MAX, "Where the code goes: one of the client's registered redirect URIs, "
                                                  "compared exactly."),
        "require_mfa": {"type": "boolean", "default": False,
                        "description": "Ask for two distinct flows (the provider's mfa level). null is refused."},
        "client_attributes": {"$ref": "#/components/schemas/ClientAttributes"},
        "state": text_schema(api.TEXT_MAX, "Returned unchanged in the redirect URL.", required=False),
        "nonce": text_schema(api.TEXT_MAX, "Copied into the ID token.", required=False),
        "scope": text_schema(api.TEXT_MAX, "Space-separated; scopes the client may not ask for are dropped; "
                                           "default openid.", required=False),
        "code_challenge": text_schema(api.CODE_CHALLENGE_MAX, "PKCE (RFC 7636), method S256; the token request then "
                                                              "needs the code_verifier.", required=False),
        "mfa_session": text_schema(api.MFA_SESSION_MAX, "From the answer of the first factor: makes this call the "
                                                        "second factor of that login (same user and client, single "
                                                        "use, 10 minutes).", required=False),
    }
    email = text_schema(api.EMAIL_MAX, "The account's primary email address.")
    phone = text_schema(api.PHONE_MAX, "The account's verified phone number, as stored (E.164).")
    passcode = text_schema(api.PASSCODE_MAX, "The code that was sent.")

    schemas = {
        "ClientAttributes": attributes,
        "SendEmailOtp": _body(["email"], {"email": email, "client_attributes": transaction["client_attributes"]},
                              "Send a one-time code to an email address."),
        "SendSmsOtp": _body(["phone_number"], {"phone_number": phone,
                                               "client_attributes": transaction["client_attributes"]},
                            "Send a one-time code by SMS."),
        "SendMagicLink": _body(["email", "redirect_uri"], {"email": email, **transaction},
                               "Send a sign-in link; the transaction fields apply when it is followed."),
        "ValidateEmailOtp": _body(["email", "passcode", "redirect_uri"],
                                  {"email": email, "passcode": passcode, **transaction},
                                  "Check an emailed code."),
        "ValidateSmsOtp": _body(["phone_number", "passcode", "redirect_uri"],
                                {"phone_number": phone, "passcode": passcode, **transaction},
                                "Check an SMS code."),
        "PasswordLogin": _body(
            ["password", "redirect_uri"],
            {"username": text_schema(api.USERNAME_MAX, "Username or primary email address.", required=False),
             "email": {"description": f"Used only when username is not given: then required, a string of 1 to "
                                      f"{api.EMAIL_MAX} characters without U+0000. Otherwise not looked at."},
             "password": text_schema(api.PASSWORD_MAX, "The account's password."), **transaction},
            "Check a password. The login name is `username` or, when that is not given, `email`.",
            anyOf=[
                {"required": ["username"], "properties": {"username": {"type": "string", "minLength": 1}}},
                {"required": ["email"],
                 "properties": {"username": {"enum": [None, ""]},
                                "email": {"type": "string", "minLength": 1, "maxLength": api.EMAIL_MAX,
                                          "pattern": NO_NUL}}},
            ]),
        "CodeSent": {
            "type": "object", "required": ["message"], "additionalProperties": False,
            "description": "The same answer whether or not the address belongs to an account (no enumeration).",
            "properties": {"message": {"type": "string"}},
        },
        "FactorResult": {
            "type": "object", "required": ["result"], "additionalProperties": False,
            "description": "The factor succeeded. `result.url` is redirect_uri with `code` (and `state`) for "
                           "/oidc/token, or, when a second factor is needed (require_mfa or the policy), with "
                           "`error=mfa_required`, `error_description=A second factor is required: <factors>` "
                           "(a comma-separated subset of email,sms,email-otp) and `mfa_session`; the "
                           "`mfa_session` member is then present too.",
            "properties": {
                "result": {"type": "object", "required": ["url"], "additionalProperties": False,
                           "properties": {"url": {"type": "string", "format": "uri"}}},
                "mfa_session": {"type": "string", "description": "Send it with the second factor's call."},
            },
        },
    }

    unauthorized = error_answer(
        "No Bearer token, or one that is invalid, expired, revoked, not a client token, or whose client is gone.",
        ["invalid_token"],
        headers={"WWW-Authenticate": {"schema": {"type": "string"},
                                      "description": 'Bearer error="invalid_token" (RFC 6750).'}})
    server_error = server_error_answer()

    def send(summary: str, body: str, scope: str, description: str, codes=("invalid_request",)) -> dict:
        return {
            "summary": summary, "description": description, "security": [{"clientToken": [scope]}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{body}"}}}},
            "responses": {
                "200": json_answer(ref("CodeSent"), "Sent, if the address belongs to an account that can use it."),
                "400": error_answer("The body is not a JSON object, a field is missing or malformed, the redirect_uri "
                                    "(sign-in links) is not registered, or the flow is not enabled.", list(codes)),
                "401": unauthorized,
                "403": error_answer(f"The token lacks the scope {scope}.", ["insufficient_scope"]),
                "429": error_answer("Too many messages (per address, user or IP) or too soon after the last one.",
                                    ["rate_limited", "resend_too_soon"]),
                "500": server_error,
                "503": error_answer("No mail server or SMS gateway is configured. (Messages are sent after the "
                                    "answer: a failing server shows in the provider's log, not here.)",
                                    ["delivery_failed"]),
            },
        }

    def validate(summary: str, body: str, scope: str, description: str) -> dict:
        return {
            "summary": summary, "description": description, "security": [{"clientToken": [scope]}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{body}"}}}},
            "responses": {
                "200": json_answer(ref("FactorResult"), "The factor succeeded: a code, or mfa_required."),
                "400": error_answer("Malformed request (invalid_request); wrong, expired or used secret, or a bad "
                                    "mfa_session (invalid_grant); a second factor is needed but the user has none "
                                    "the API offers (mfa_unavailable).",
                                    ["invalid_request", "invalid_grant", "mfa_unavailable"]),
                "401": unauthorized,
                "403": error_answer(f"The token lacks the scope {scope} (insufficient_scope), or the sign-in policy "
                                    "refuses this sign-in (access_denied).", ["insufficient_scope", "access_denied"]),
                "500": server_error,
            },
        }

    query = lambda name, schema, description, required=False: {  # noqa: E731
        "name": name, "in": "query", "required": required, "schema": schema, "description": description}
    webauthn = {
        "summary": "Sign in with WebAuthn in the browser",
        "description": (
            "For a person's browser, not a backend: no token. Checks client_id and redirect_uri (an error is "
            "never sent to an unregistered address) and redirects into the authorization endpoint: "
            "`/oidc/auth?client_id&redirect_uri&response_type=code&scope=openid&acr_values=<level>` plus state, "
            "nonce and code_challenge (method S256) when given; the code comes back to redirect_uri as in any "
            "authorization code flow. `<level>` is an acr level whose required factors are all WebAuthn "
            "factors: without require_mfa the weakest one (phr by default). With require_mfa=true the weakest "
            "such level needing two flows, else the weakest ranked at or above the mfa level. The default "
            "levels rank phr (one WebAuthn flow) above mfa, so there require_mfa=true still means phr: one "
            "WebAuthn flow, which the provider ranks above two flows of other kinds. To demand WebAuthn and a "
            "second flow, configure a level with the WebAuthn required_factors and flows: 2. Every parameter "
            "may appear once; an empty value counts as absent (RFC 6749 3.1); other parameters are ignored."),
        "security": [],
        "parameters": [
            query("client_id", {"type": "string", "minLength": 1, "maxLength": limit}, "A registered client.", True),
            query("redirect_uri", {"type": "string", "minLength": 1, "maxLength": limit},
                  "One of the client's registered redirect URIs, compared exactly.", True),
            query("require_mfa", {"type": "string", "enum": ["true", "false", ""]},
                  "true: also multi-factor (see above). Default false."),
            query("state", {"type": "string", "maxLength": limit}, "Returned to redirect_uri."),
            query("nonce", {"type": "string", "maxLength": limit}, "Copied into the ID token."),
            query("code_challenge", {"type": "string", "anyOf": [{"pattern": "^[A-Za-z0-9._~-]{43,128}$"},
                                                                 {"maxLength": 0}]},
                  "PKCE (RFC 7636); required for public clients by the authorization endpoint."),
            query("code_challenge_method", {"type": "string", "enum": ["S256", ""]},
                  "Only S256, and only with a code_challenge; S256 is implied when omitted."),
        ],
        "responses": {
            "302": {"description": "To the authorization endpoint (see above); the body is a short HTML page "
                                   "linking there.", "content": HTML,
                    "headers": {"Location": {"schema": {"type": "string", "format": "uri"}, "required": True}}},
            "400": error_answer("Missing or repeated parameter, unknown client (invalid_client), unregistered "
                                "redirect_uri, bad require_mfa or PKCE parameters (invalid_request), or no acr level "
                                "here requires WebAuthn (unmet_authentication_requirements). An HTML page unless "
                                "the request prefers application/json.",
                                ["invalid_request", "invalid_client", "unmet_authentication_requirements"], html=True),
            "500": error_answer("Unexpected failure (a bug). An HTML page unless the request prefers application/json.",
                                ["server_error"], html=True),
        },
    }
    link_token = {"type": "string", "maxLength": api.LINK_TOKEN_MAX,
                  "description": "The token from the emailed link."}

    paths = {
        "/v1/auth/otp/email": {"post": send(
            "Send an email code", "SendEmailOtp", "auth.email",
            "Sends a one-time code to the address when it is an account's primary email address; the answer "
            "does not tell.")},
        "/v1/auth/otp/email/validation": {"post": validate(
            "Check an email code", "ValidateEmailOtp", "auth.email",
            "Checks the code sent by POST /v1/auth/otp/email for this client and address.")},
        "/v1/auth/otp/sms": {"post": send(
            "Send an SMS code", "SendSmsOtp", "auth.sms",
            "Sends a one-time code by SMS when the number is exactly one account's verified phone number.")},
        "/v1/auth/otp/sms/validation": {"post": validate(
            "Check an SMS code", "ValidateSmsOtp", "auth.sms",
            "Checks the code sent by POST /v1/auth/otp/sms for this client and number.")},
        "/v1/auth/links/email": {"post": send(
            "Send a sign-in link", "SendMagicLink", "auth.email",
            "Emails a link to /v1/auth/links/email/verify. Following it and pressing its button redirects the "
            "browser to redirect_uri with a code, or with error=mfa_required and mfa_session.")},
        "/v1/auth/links/email/verify": {
            "get": {
                "summary": "The sign-in link's landing page",
                "description": "Shows a button that POSTs the token: fetching the link (as mail scanners do) "
                               "does not use it up.",
                "security": [],
                "parameters": [query("token", link_token, "From the emailed link.", True)],
                "responses": {
                    "200": {"description": "The confirmation page.", "content": HTML},
                    "400": {"description": "The link is unknown, expired or used (an HTML page).", "content": HTML},
                    "500": error_answer("Unexpected failure (a bug). An HTML page unless the request prefers JSON.",
                                        ["server_error"], html=True),
                },
            },
            "post": {
                "summary": "Use the sign-in link",
                "description": "The landing page's form. Redirects (303) to redirect_uri like the JSON answers' "
                               "result.url.",
                "security": [],
                "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "properties": {"token": link_token}, "required": ["token"],
                    "additionalProperties": True}}}},
                "responses": {
                    "303": {"description": "To redirect_uri with code (and state), or with error=mfa_required "
                                           "and mfa_session; the body is a short HTML page linking there.",
                            "content": HTML,
                            "headers": {"Location": {"schema": {"type": "string", "format": "uri"},
                                                     "required": True}}},
                    "400": error_answer("The link is unknown, expired or used (link_invalid: an HTML page); or, in "
                                        "JSON, a bad mfa_session (invalid_grant), or a second factor is needed that "
                                        "the user lacks (mfa_unavailable), or require_mfa cannot be honoured "
                                        "(invalid_request).", ["invalid_request", "invalid_grant", "mfa_unavailable"],
                                        html=True),
                    "403": error_answer("The sign-in policy refuses this sign-in.", ["access_denied"]),
                    "500": error_answer("Unexpected failure (a bug). An HTML page unless the request prefers JSON.",
                                        ["server_error"], html=True),
                },
            },
        },
        "/v1/auth/password/login": {"post": validate(
            "Check a password", "PasswordLogin", "auth.password",
            "Checks the password of the account named by username (or email). Failures count toward the "
            "account lockout; a locked account gets the same invalid_grant.")},
        "/v1/auth/webauthn": {"get": webauthn},
        "/v1/openapi.json": {"get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "The OpenAPI 3.1 description of the direct API.",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}},
        }},
    }
    return openapi_document(
        info={
            "title": "Direct authentication API",
            "version": "1",
            "description": (
                "A backend calls these endpoints with a client access token (client_credentials grant at "
                "/oidc/token) holding the scope each operation names: auth.email, auth.sms, auth.password. "
                "A successful factor answers 200 with a redirect URL that carries an authorization code for "
                "/oidc/token; when a second factor is needed the URL and the answer carry mfa_session, which "
                "the second factor's call must send back.\n\n"
                "Request bodies are JSON objects (Content-Type application/json). Fields not named in a schema "
                "are ignored, not refused. A string field that is absent, null or \"\" counts as not given. "
                "No string may contain U+0000 or an unpaired surrogate.\n\n"
                "Every error is {\"error\", \"error_description\"}; each response lists its error codes. "
                "The two browser pages (the sign-in link's landing and GET /v1/auth/webauthn) answer HTML "
                "error pages unless the request prefers application/json.\n\n"
                "The same API is served under /cis (second server), as the Transmit guide's URLs have it."),
        },
        servers=[
            {"url": issuer, "description": "The provider."},
            {"url": f"{issuer}/cis", "description": "The same API under /cis, as in the Transmit guide "
                                                    "(not /v1/openapi.json)."},
        ],
        paths=paths,
        schemas=schemas,
        security_schemes={"clientToken": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A client access token (an at+jwt from the client_credentials grant at "
                           f"{issuer}/oidc/token) whose scope holds the one each operation lists."}},
    )
