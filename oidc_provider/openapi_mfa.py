"""The OpenAPI 3.1 description of the MFA API (views/mfa_api.py), served at
`GET /mfa/openapi.json`.

Built from the limits the views enforce (imported from them), as oidc_provider/openapi.py
does for the direct API. What it says, the code does:

- Request bodies are JSON objects; members not named are ignored (`additionalProperties:
  true`). A string member that is absent, null or "" counts as not given; a documented
  string member that is present is checked (type, length, no U+0000) whether or not the
  request uses it.
- Errors are `{"error", "error_description"}`; each response lists the `error` values it
  can carry. Every 401 carries `WWW-Authenticate: Bearer error="..."` (RFC 6750; RFC 9470
  for insufficient_user_authentication, with acr_values and max_age).
- The token endpoint's MFA grants are OAuth (form-encoded, or JSON at /oauth/token) and
  are described by discovery and the README, not here.
- A 500 (`server_error`) is documented because a handler exists; it is a bug whenever it
  happens, and the fuzz tests (tests/functional/test_mfa_api_fuzz.py) fail on any.
"""

from __future__ import annotations

from .openapi_common import error_answer, json_answer, openapi_document, ref, server_error_answer, text_schema

# the challenge of every 401 here
CHALLENGE = {"WWW-Authenticate": {
    "schema": {"type": "string"}, "required": True,
    "description": 'Bearer error="<the error>" (RFC 6750); for insufficient_user_authentication also '
                   'error_description, acr_values and max_age (RFC 9470).'}}


def _text(limit: int, description: str, required: bool = False) -> dict:
    """Most members here are optional."""
    return text_schema(limit, description, required)


def document(settings) -> dict:
    """The description for a provider with these settings (its issuer URL)."""
    from .views import mfa_api as view

    issuer = settings.issuer_url.rstrip("/")
    one = lambda values, description: {  # noqa: E731 - Auth0's lists of exactly one value
        "type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "string", "enum": list(values)},
        "description": description}

    schemas = {
        "Authenticator": {
            "type": "object", "required": ["id", "authenticator_type", "active", "name"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "description": "<kind>|dev_<tag>, e.g. totp|dev_..., sms|dev_..."},
                "authenticator_type": {"enum": ["otp", "oob", "recovery-code"]},
                "oob_channel": {"enum": ["sms", "voice", "email", "auth0"],
                                "description": "oob only; auth0 is a push device."},
                "name": {"type": "string", "description": "A masked number or address, or the device's name."},
                "active": {"type": "boolean", "description": "false: an authenticator app not confirmed yet."},
            },
        },
        "AssociateRequest": {
            "type": "object", "required": ["authenticator_types"], "additionalProperties": True,
            "description": "One authenticator at a time. otp: an authenticator app. oob with sms or voice: the "
                           "phone_number (E.164) gets a code; with email: the account's primary address does; "
                           "with auth0: a push device enrolls from barcode_uri. Members not named are ignored.",
            "properties": {
                "authenticator_types": one(view.AUTHENTICATOR_TYPES, "What to enroll."),
                "oob_channels": {**one(tuple(view.api.CHANNELS), "Required for oob; checked whenever present."),
                                 "type": ["array", "null"]},
                "phone_number": _text(view.PHONE_MAX, "For sms and voice: E.164, e.g. +14155550100."),
                "email": _text(view.EMAIL_MAX, "For email: the account's primary email address."),
                "client_id": _text(view.CLIENT_MAX, "When given, the client must authenticate and be the token's."),
                "client_secret": _text(view.SECRET_MAX, "The client's secret (client_secret_post)."),
            },
        },
        "AssociateAnswer": {
            "type": "object", "required": ["authenticator_type"], "additionalProperties": False,
            "description": "otp: secret and barcode_uri (otpauth://). oob: oob_code for the mfa-oob grant, with "
                           "binding_method prompt (a code was sent: the binding_code) or, for auth0 (push), "
                           "barcode_uri (the device enrollment URL). recovery_codes with a user's first "
                           "enrollment, usable once it is confirmed.",
            "properties": {
                "authenticator_type": {"enum": ["otp", "oob"]},
                "secret": {"type": "string"}, "barcode_uri": {"type": "string"},
                "oob_channel": {"enum": ["sms", "voice", "email", "auth0"]},
                "oob_code": {"type": "string"}, "binding_method": {"enum": ["prompt"]},
                "recovery_codes": {"type": "array", "items": {"type": "string"},
                                   "description": "Numbered in this order, the first is number 1: a sign-in "
                                                  "asks for the next unused one by its number."},
            },
        },
        "ChallengeRequest": {
            "type": "object", "required": ["mfa_token", "client_id"], "additionalProperties": True,
            "description": "Members not named are ignored.",
            "properties": {
                "mfa_token": _text(view.TOKEN_MAX, "From the mfa_required answer.", required=True),
                "client_id": _text(view.CLIENT_MAX, "The client the mfa_token was issued to.", required=True),
                "client_secret": _text(view.SECRET_MAX, "For confidential clients (client_secret_post)."),
                "challenge_type": {"enum": [*view.CHALLENGE_TYPES, "", None],
                                   "description": "What the client can handle; default otp oob."},
                "authenticator_id": _text(view.ID_MAX, "One of the user's authenticators (GET /mfa/authenticators)."),
                "oob_channel": {"enum": [*view.api.CHANNELS, "", None], "description": "Only this channel."},
            },
        },
        "ChallengeAnswer": {
            "type": "object", "required": ["challenge_type"], "additionalProperties": False,
            "description": "otp: send the app's code with the mfa-otp grant. oob: send oob_code (and, with "
                           "binding_method prompt, the code received as binding_code) with the mfa-oob grant.",
            "properties": {"challenge_type": {"enum": ["otp", "oob"]}, "oob_code": {"type": "string"},
                           "binding_method": {"enum": ["prompt"]}},
        },
    }

    unauthorized = error_answer("No Bearer token, or an mfa_token that is unknown, used or expired, or an access token "
                                "that is invalid, expired, revoked, not a user's or not for the MFA API's audience.",
                                ["invalid_token"], CHALLENGE)
    server_error = server_error_answer()
    security = [{"mfaToken": []}, {"accessToken": []}]

    def body(name: str) -> dict:
        return {"required": True, "content": {"application/json": {"schema": ref(name)}}}

    paths = {
        "/mfa/authenticators": {"get": {
            "summary": "List the user's authenticators",
            "description": "With an mfa_token, or an access token holding read:authenticators.",
            "security": security,
            "responses": {
                "200": json_answer({"type": "array", "items": ref("Authenticator")}, "The user's authenticators."),
                "401": unauthorized,
                "403": error_answer("The access token lacks read:authenticators.", ["insufficient_scope"]),
                "500": server_error,
            },
        }},
        "/mfa/authenticators/{authenticator_id}": {"delete": {
            "summary": "Remove an authenticator",
            "description": "Access token only (remove:authenticators) whose amr holds mfa and whose auth_time is at "
                           f"most mfa_api.reauth_max_age ({settings.mfa_api.reauth_max_age}) seconds old. Removing "
                           "sms or voice leaves the phone number unverified (both go); the email address is not "
                           "removable here.",
            "security": [{"accessToken": []}],
            "parameters": [{"name": "authenticator_id", "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1}, "description": "From the list."}],
            "responses": {
                "204": {"description": "Removed."},
                "400": error_answer("The authenticator cannot be removed here (the email address).",
                                    ["invalid_request"]),
                "401": error_answer("Bad token (invalid_token), or no recent second factor "
                                    "(insufficient_user_authentication).",
                                    ["invalid_token", "insufficient_user_authentication"], CHALLENGE),
                "403": error_answer("An mfa_token, or an access token without remove:authenticators.",
                                    ["insufficient_scope"]),
                "404": error_answer("The user has no authenticator with this id.",
                                    ["authenticator_not_found", "not_found"]),
                "500": server_error,
            },
        }},
        "/mfa/associate": {"post": {
            "summary": "Enroll an authenticator",
            "description": "With an mfa_token only for a user with no authenticator but email (else 403 User is "
                           "already enrolled.); with an access token holding enroll, and a recent second factor "
                           "when the user has an authenticator. The mfa-otp or mfa-oob grant with the same "
                           "mfa_token (or access token as mfa_token) confirms it.",
            "security": security,
            "requestBody": body("AssociateRequest"),
            "responses": {
                "200": json_answer(ref("AssociateAnswer"), "Started; confirm with the first code or the device."),
                "400": error_answer("Malformed request, a factor that is not enabled, a phone number not in E.164 or "
                                    "an address that is not the account's (invalid_request); an authenticator that "
                                    "cannot complete this sign-in (unsupported_challenge_type).",
                                    ["invalid_request", "unsupported_challenge_type"]),
                "401": error_answer("Bad token (invalid_token), client authentication failed (invalid_client), or no "
                                    "recent second factor (insufficient_user_authentication).",
                                    ["invalid_token", "invalid_client", "insufficient_user_authentication"],
                                    CHALLENGE),
                "403": error_answer("Already enrolled (access_denied, with an mfa_token), or the access token lacks "
                                    "enroll (insufficient_scope).", ["access_denied", "insufficient_scope"]),
                "429": error_answer("Too many codes (per address, user or IP) or too soon after the last one.",
                                    ["rate_limited", "resend_too_soon"]),
                "500": server_error,
                "503": error_answer("No mail server or gateway is configured for the channel (messages are sent "
                                    "after the answer).", ["delivery_failed"]),
            },
        }},
        "/mfa/challenge": {"post": {
            "summary": "Challenge an authenticator",
            "description": "For an mfa_token's sign-in: otp sends nothing; oob sends a code (sms, voice, email) or "
                           "asks the push devices (auth0). Without authenticator_id the first suitable one "
                           "(app, SMS, voice, email, push) is used.",
            "security": [],
            "requestBody": body("ChallengeRequest"),
            "responses": {
                "200": json_answer(ref("ChallengeAnswer"), "Challenged."),
                "400": error_answer("Malformed request (invalid_request), an mfa_token that is unknown, used or "
                                    "another client's (invalid_grant) or expired (expired_token), no authenticator of "
                                    "the types (unsupported_challenge_type), or not this user's "
                                    "(invalid_authenticator_id).",
                                    ["invalid_request", "invalid_grant", "expired_token", "unsupported_challenge_type",
                                     "invalid_authenticator_id"]),
                "401": error_answer("Client authentication failed.", ["invalid_client"], CHALLENGE),
                "429": error_answer("Too many codes or push requests, or too soon after the last one.",
                                    ["rate_limited", "resend_too_soon", "push_rate_limited"]),
                "500": server_error,
                "503": error_answer("No mail server or gateway is configured for the channel, or no push device "
                                    "could be notified.", ["delivery_failed"]),
            },
        }},
        "/mfa/openapi.json": {"get": {
            "summary": "This document", "security": [],
            "responses": {"200": json_answer({"type": "object"}, "The OpenAPI 3.1 description of the MFA API.")},
        }},
    }
    return openapi_document(
        info={
            "title": "MFA API (Auth0-compatible)",
            "version": "1",
            "description": (
                "Auth0's MFA API: an application written against it moves with only its base URL changed. "
                "A sign-in with the password grant at /oauth/token (or /oidc/token) that needs a second factor "
                "answers 403 {\"error\": \"mfa_required\", \"error_description\": \"Multifactor authentication "
                "required\", \"mfa_token\": ...}. The mfa_token lists, enrolls (a first authenticator) and "
                "challenges here; the grants http://auth0.com/oauth/grant-type/mfa-otp, mfa-oob and "
                "mfa-recovery-code finish the sign-in. Self-service uses a user's access token for the audience "
                f"{issuer}/mfa/ with the scopes enroll, read:authenticators, remove:authenticators.\n\n"
                "Request bodies are JSON objects; members not named are ignored; a string member that is absent, "
                "null or \"\" counts as not given. Every error is {\"error\", \"error_description\"}."),
        },
        servers=[{"url": issuer, "description": "The provider."}],
        paths=paths,
        schemas=schemas,
        security_schemes={
            "mfaToken": {"type": "http", "scheme": "bearer",
                         "description": "The mfa_token of an mfa_required answer (opaque, 10 minutes)."},
            "accessToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                            "description": f"A user's access token whose audience is {issuer}/mfa/ and whose "
                                           "scope holds what the operation needs."},
        },
    )
