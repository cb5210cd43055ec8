"""The hot endpoints, answered before Flask: the token grants, userinfo, introspection, keys.

client_credentials and refresh_token are what services call thousands of times a second, and
inside Flask, Werkzeug and Authlib their request costs about twice the RS256 signature it
exists for (README, "Where the time goes"). This WSGI layer answers the token grants in their
common, successful shape: a form posted once, a client secret (HTTP Basic or the form) or, for
a code or a refresh, a public client's id alone, no DPoP proof, no `scope` or `resource` on a
refresh. It authenticates the client with the same keyed hash, and issues through the same
functions as the Authlib grants (server.py: client_credentials_issue, code_issue,
refresh_issue, ...) and the same TokenService statements.

A refresh is claimed first, and a copy of the token stored as its successor with the claim, on
PostgreSQL in one autocommitted statement (a refresh's one round trip, no row locked while
signing), elsewhere in one transaction; the answer is made from that copy. What the answer
computes otherwise (an acr whose factors aged out) is written over the copy, and an answer that
fails gives the claim back, so the Flask endpoint answers the request as if it came first.

The code exchange is answered for a live code of this client, with its redirect_uri and PKCE
verifier, resources the grant covers and an active account; the code is counted, the refresh
token stored and the code spent in the Authlib grant's order (server.py: count_code_use,
spend_authorization_code), so a use that came first, or a replay that raced this one, is
judged the same way.

It never answers an error. Anything else - a wrong secret, an unknown or spent refresh token,
a spent or unknown code, a wrong verifier or redirect_uri, a repeated or unexpected parameter,
a DPoP proof, an assertion, a public client's code without PKCE, a token claimed by a
concurrent use before ours, a failure (a claim given back) - is rolled back and handed unchanged
to the Flask endpoint, whose Authlib grants alone decide what is refused and how (a replayed
refresh token revokes its family there).

userinfo is answered for a Bearer access token of ours with `openid`, for this endpoint, of an
active account: the same claims (models/users.py: claims_for_scope) from one autocommitted
read of the account's columns; introspection for an active access token asked by a client
allowed to see it; every refusal and every other answer is the Flask endpoint's. Discovery
and JWKS are the bytes Flask's views send (endpoints.py: published).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import time
from collections import namedtuple
from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import parse_qs, unquote

from authlib.oauth2.rfc6749 import OAuth2Error
from authlib.oauth2.rfc7636.challenge import CODE_VERIFIER_PATTERN, compare_s256_code_challenge
from psycopg.rows import tuple_row

from ..errors import outage_errors
from ..extensions import driver_params, driver_sql
from ..models.users import DISABLED, USERINFO_COLUMNS, claims_for_scope
from ..observability import answered, request_id_for
from ..security import every_answer_headers
from .endpoints import PUBLISHED, access_token_introspection, may_introspect, published
from .server import (REPEATABLE_TOKEN_PARAMETERS, client_credentials_issue, code_id_token, code_issue,
                     count_code_use, load_authorization_code, refresh_id_token, refresh_issue,
                     revoke_code_grant, spend_authorization_code)
from .tokens import audiences, sha256_hex

log = logging.getLogger(__name__)

TOKEN_PATH = "/oidc/token"
USERINFO_PATH = "/oidc/userinfo"
INTROSPECTION_PATH = "/oidc/introspect"
# The parameters of each grant's common shape (RFC 6749 4.4.2 and 6, RFC 8707 2.2); the form's
# client_id and client_secret are client_secret_post's (RFC 6749 2.3.1).
GRANT_FIELDS = {
    "client_credentials": {"grant_type", "scope", "resource", "client_id", "client_secret"},
    "refresh_token": {"grant_type", "refresh_token", "client_id", "client_secret"},
    "authorization_code": {"grant_type", "code", "redirect_uri", "code_verifier", "resource", "client_id",
                           "client_secret"},
}
TOKEN_FIELDS = set().union(*GRANT_FIELDS.values())
INTROSPECTION_FIELDS = {"token", "token_type_hint", "client_id", "client_secret"}  # RFC 7662 2.1
TOKEN_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache")]
NO_STORE_JSON = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


def _as_jsonify(document: dict) -> bytes:
    """The bytes of Flask's jsonify (sorted keys, compact, a newline)."""
    return (json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n").encode()


class FastPath:
    """WSGI middleware in front of the Flask app (`app.wsgi_app`)."""

    def __init__(self, flask_wsgi_app, op, engine):
        self.flask = flask_wsgi_app
        self.op = op
        self.one_statement = engine.dialect.name == "postgresql"  # TokenService.claim_for_rotation
        self.connect = DriverConnection(engine).connect if self.one_statement else engine.connect
        always = every_answer_headers(op.settings.issuer_url.startswith("https://"))
        self.routes = {  # (method, path): the endpoint's name, the answer (body, headers, grant), headers
            ("POST", TOKEN_PATH): ("oidc.token", self._token, TOKEN_HEADERS + always),
            ("POST", INTROSPECTION_PATH): ("oidc.introspect", self._introspection, NO_STORE_JSON + always),
            ("GET", USERINFO_PATH): ("oidc.userinfo", self._userinfo, NO_STORE_JSON + always),
            **{("GET", path): (f"oidc.{view}", self._published, always) for path, view in PUBLISHED.items()},
        }
        self.grants = {"client_credentials": self._client_credentials, "refresh_token": self._refresh_token,
                       "authorization_code": self._authorization_code}
        self.outages = outage_errors()
        self.serving = False

    def start_serving(self) -> None:
        """Start what a serving process runs beside its requests (background queues, sweepers),
        once: `serve` calls it as each worker starts, any other server at its first request."""
        if not self.serving:
            self.serving = True
            for hook in self.op.serving_hooks:  # each starts its work once (a concurrent first call may run it too)
                hook()

    def __call__(self, environ, start_response):
        if not self.serving:  # every request passes here, answered here or by Flask
            self.start_serving()
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
        route = self.routes.get((method, path))
        if route is None:
            return self.flask(environ, start_response)
        endpoint, answer, headers = route
        started = time.perf_counter()
        try:
            answered_with = answer(environ)
        except self.outages:
            answered_with = None  # nothing stays written; the full endpoint meets the outage too, answers and logs it
        except Exception:  # noqa: BLE001 - nothing stays written: the full endpoint answers
            log.warning("the fast path of %s failed; the full endpoint answers", path, exc_info=True)
            answered_with = None
        if answered_with is None:
            return self.flask(environ, start_response)
        body, own_headers, grant_type = answered_with
        request_id = request_id_for(environ.get("HTTP_X_REQUEST_ID"))
        start_response("200 OK", [*own_headers, *headers, ("Content-Length", str(len(body))),
                                  ("X-Request-ID", request_id)])
        answered(self.op.settings, method, path, endpoint, 200, time.perf_counter() - started,
                 environ.get("REMOTE_ADDR"), request_id, grant_type)
        return [body]

    def _published(self, environ):
        """Discovery and JWKS, the bytes the Flask views send (endpoints.py: published)."""
        if environ.get("QUERY_STRING"):
            return None
        body, headers = published(self.op, environ["PATH_INFO"])
        return body, headers, None

    # -- the token endpoint ----------------------------------------------------------------------

    def _token(self, environ):
        form = self._form(environ, TOKEN_FIELDS)
        grant_type = form.get("grant_type", [None])[0] if form else None
        if grant_type not in GRANT_FIELDS or not form.keys() <= GRANT_FIELDS[grant_type]:
            return None
        token = self._answer(environ, form, grant_type)
        if token is None:
            return None
        return json.dumps(token, sort_keys=True).encode(), (), grant_type  # as Authlib writes a token response

    def _form(self, environ, fields: set[str]) -> dict[str, list[str]] | None:
        """The form of a request in a shape we answer (no parameter but `fields`), else None; the
        body stays readable for Flask."""
        content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded" or "HTTP_DPOP" in environ:
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None  # chunked or malformed: Werkzeug reads it
        if not 0 < length <= self.op.settings.max_request_bytes:
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            form = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True, errors="strict")
        except ValueError:  # also UnicodeDecodeError
            return None
        limit = self.op.settings.max_parameter_length
        if not form.keys() <= fields:
            return None
        for name, values in form.items():
            if len(values) > 1 and name not in REPEATABLE_TOKEN_PARAMETERS or any(len(v) > limit for v in values):
                return None
        return form

    def _answer(self, environ, form: dict, grant_type: str) -> dict | None:
        client = self._client(environ.get("HTTP_AUTHORIZATION"), form, public=grant_type != "client_credentials")
        if (client is None or not client.check_grant_type(grant_type)
                or client.config.dpop_bound_access_tokens):  # RFC 9449 5.2: the full endpoint asks for a proof
            return None
        return self.grants[grant_type](client, form)

    def _client(self, authorization: str | None, form: dict, public: bool = False):
        """The client, when it proved its secret the one way it is registered for (RFC 6749 2.3.1),
        or, where `public`, a client registered for none that sends its id and no secret."""
        if authorization is not None:
            if "client_id" in form or "client_secret" in form:
                return None
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                client_id, colon, secret = base64.b64decode(credentials, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            method, client_id, secret = "client_secret_basic", unquote(client_id), unquote(secret) if colon else ""
        elif public and "client_secret" not in form:
            method, client_id, secret = "none", form.get("client_id", [""])[0], None
        else:
            method, client_id, secret = "client_secret_post", form.get("client_id", [""])[0], \
                form.get("client_secret", [""])[0]
        client = self.op.clients.get(client_id) if client_id and (secret or method == "none") else None
        if client is None or not client.check_endpoint_auth_method(method, "token"):
            return None
        return client if method == "none" or client.check_client_secret(secret) else None

    def _client_credentials(self, client, form: dict) -> dict:
        scope = form.get("scope", [None])[0]
        return self.op.tokens.issue(client_credentials_issue(self.op, client, scope, form.get("resource", [])))

    def _refresh_token(self, client, form: dict) -> dict | None:
        if "refresh_token" not in form:
            return None
        tokens = self.op.tokens
        with self.connect() as sql:
            rotation = tokens.claim_for_rotation(form["refresh_token"][0], client.client_id, sql, self.one_statement)
            if rotation is None:
                return None
            try:
                copy = rotation.successor
                issued = replace(refresh_issue(self.op, client, copy, copy.scope, []), access_jti=copy.access_jti,
                                 refresh_token=rotation.successor_value)
                token, successor = tokens.respond(issued)
                refresh_id_token(self.op, client, copy, issued, token)
                tokens.settle(rotation, successor, sql)
            except BaseException:
                tokens.undo(rotation, sql)
                raise
            return token

    def _authorization_code(self, client, form: dict) -> dict | None:
        code_value = form.get("code", [""])[0]
        code = load_authorization_code(self.op, sha256_hex(code_value)) if 0 < len(code_value) <= 256 else None
        if (code is None or code.client_id != client.client_id or code.dpop_jkt  # RFC 9449 10: a proof is due
                or client.is_public and not code.code_challenge  # RFC 9700 2.1.1: PKCE for public clients
                or form.get("redirect_uri", [None])[0] != code.redirect_uri
                or not _verifier_matches(code, form.get("code_verifier", [None])[0])):
            return None
        try:
            issued = code_issue(self.op, client, code, form.get("resource", []),
                                client.check_grant_type("refresh_token"))
        except OAuth2Error:  # a resource the grant does not cover
            return None
        tokens = self.op.tokens
        with self.connect() as sql:
            user = sql.execute(DISABLED, {"id": code.sub}).first()
            if user is None or user.disabled:
                return None
            token, successor = tokens.respond(issued)
            code_id_token(self.op, client, code, token)
            # Used as the Authlib grant uses a code: counted once the answer is complete (another
            # use that came first is the full endpoint's to judge), the tokens stored, the code
            # spent; a replay that raced this use revokes what it was given (RFC 6749 4.1.2).
            if count_code_use(self.op, code) > 1:
                return None
            if successor is not None:
                tokens.save_refresh_token(successor, sql)
            if spend_authorization_code(self.op, code) > 2:
                revoke_code_grant(self.op, code.code_hash, code.resources, client, sql)
        return token

    # -- userinfo ----------------------------------------------------------------------------------

    def _userinfo(self, environ):
        """OIDC Core 5.3 for a Bearer token of ours, for this endpoint, with openid, of an active
        account; anything else (DPoP, a query, a body, any refusal) is the full endpoint's."""
        scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if (scheme.lower() != "bearer" or environ.get("QUERY_STRING") or "HTTP_DPOP" in environ
                or environ.get("CONTENT_LENGTH") or environ.get("HTTP_TRANSFER_ENCODING")):
            return None
        claims = self.op.tokens.verify_access_token(value.strip())
        if claims is None or "cnf" in claims:  # RFC 9449 7: a bound token is refused as a Bearer token there
            return None
        scopes = set((claims.get("scope") or "").split())
        if self.op.settings.issuer_url not in audiences(claims) or "openid" not in scopes:
            return None
        with self.connect() as sql:
            user = sql.execute(USERINFO_COLUMNS, {"id": claims["sub"]}).first()
        if user is None or user.disabled:
            return None
        return _as_jsonify({"sub": user.id, **claims_for_scope(user, scopes)}), (), None

    # -- introspection ---------------------------------------------------------------------------

    def _introspection(self, environ):
        """RFC 7662 for an active access token of ours, asked by a client allowed to see it
        (endpoints.py: introspect); a refresh token, an inactive token, any refusal: Flask's."""
        form = self._form(environ, INTROSPECTION_FIELDS)
        if not form or "token" not in form:
            return None
        client = self._client(environ.get("HTTP_AUTHORIZATION"), form)
        claims = client and self.op.tokens.verify_access_token(form["token"][0])
        if not claims or not may_introspect(client, claims):
            return None
        return _as_jsonify(access_token_introspection(claims)), (), None


def _verifier_matches(code, verifier: str | None) -> bool:
    """RFC 7636 4.6 with S256 (the only method codes are issued with): the Authlib extension's
    decision when it accepts; no challenge and no verifier is a code without PKCE."""
    if not code.code_challenge:
        return verifier is None
    return (code.code_challenge_method == "S256" and verifier is not None
            and CODE_VERIFIER_PATTERN.match(verifier) is not None
            and compare_s256_code_challenge(verifier, code.code_challenge))


class DriverConnection:
    """The part of SQLAlchemy's Connection the fast path uses (execute, first), on the pool's own
    psycopg connection: its statements are compiled once, so a request costs its round trips and
    not SQLAlchemy's work per statement, which cost more than they did."""

    def __init__(self, engine):
        self.engine = engine
        self.row_classes: dict = {}

    @contextmanager
    def connect(self):
        """Autocommit: each statement is its own transaction (a refresh's read, then its rotation)."""
        pooled = self.engine.raw_connection()
        try:
            connection = pooled.driver_connection
            connection.autocommit = True
            try:
                yield _Driver(connection, self)
            finally:
                connection.autocommit = False  # as the pool hands its connections out
        finally:
            pooled.close()

    def sql(self, statement, names: tuple[str, ...]) -> str:
        return driver_sql(statement, names, self.engine.dialect)

    def row_class(self, sql: str, cursor):
        """A namedtuple of the statement's columns (SQLAlchemy's Row: attributes and `_asdict`),
        made once per statement rather than from the result's column names per row."""
        if sql not in self.row_classes:
            self.row_classes[sql] = namedtuple("Row", [column.name for column in cursor.description], rename=True)
        return self.row_classes[sql]


class _Driver:
    def __init__(self, connection, compiler: DriverConnection):
        self.connection = connection
        self.compiler = compiler

    def execute(self, statement, params: dict):
        sql = self.compiler.sql(statement, tuple(params))
        return _Result(self.connection.cursor(row_factory=tuple_row).execute(sql, driver_params(params)),
                       self.compiler, sql)

    def commit(self):
        """Autocommit: each statement was committed as it ran."""


class _Result:
    def __init__(self, cursor, compiler: DriverConnection, sql: str):
        self.cursor = cursor
        self.compiler = compiler
        self.sql = sql

    def first(self):
        values = self.cursor.fetchone()
        return None if values is None else self.compiler.row_class(self.sql, self.cursor)._make(values)

    def all(self):
        make = self.compiler.row_class(self.sql, self.cursor)._make
        return [make(values) for values in self.cursor.fetchall()]
