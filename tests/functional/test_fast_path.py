"""The fast path (oauth/fast_path.py): what it answers is what the Flask endpoint answers, and
every other request reaches that endpoint unchanged, with nothing spent."""

from __future__ import annotations

import base64
import json
import logging

import pytest
import requests

from tests.conftest import REDIRECT, UserAgent, pkce_pair, register_clients, token_request

VARYING_HEADERS = {"Date", "Server", "Content-Length", "X-Request-ID", "Connection"}
VARYING_CLAIMS = {"jti", "iat", "exp", "at_hash"}  # at_hash: of another access token


def reaching_flask(provider, path: str):
    """The requests to `path` that reached the Flask app (the full endpoint) while it runs."""
    fast_path = provider.app.wsgi_app
    flask, reached = fast_path.flask, []

    def counting(environ, start_response):
        if environ.get("PATH_INFO") == path:
            reached.append(environ.get("CONTENT_LENGTH"))
        return flask(environ, start_response)

    fast_path.flask = counting
    yield reached
    fast_path.flask = flask


@pytest.fixture(autouse=True)
def no_fast_path_failure():
    """What the fast path hands on, it hands on by decision: none of it by an exception."""
    failures = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = failures.append
    logger = logging.getLogger("oidc_provider.oauth.fast_path")
    logger.addHandler(handler)
    yield failures  # a test that makes the fast path fail takes its failures out
    logger.removeHandler(handler)
    assert not failures, failures[0].getMessage()


@pytest.fixture
def full_endpoint(provider):
    """The token requests that reached the Authlib endpoint during a test."""
    yield from reaching_flask(provider, "/oidc/token")


@pytest.fixture
def full_userinfo(provider):
    yield from reaching_flask(provider, "/oidc/userinfo")


def jwt_parts(token: str) -> tuple[dict, dict]:
    header, claims = (json.loads(base64.urlsafe_b64decode(part + "==")) for part in token.split(".")[:2])
    return header, claims


def same_answer(fast, full):
    """Two token responses alike in all but what differs by nature (ids, times, the token values)."""
    assert fast.status_code == full.status_code == 200, (fast.text, full.text)
    assert {k: v for k, v in fast.headers.items() if k not in VARYING_HEADERS} == \
        {k: v for k, v in full.headers.items() if k not in VARYING_HEADERS}
    fast_body, full_body = fast.json(), full.json()
    assert list(fast_body) == list(full_body)
    for name in ("token_type", "expires_in", "scope"):
        assert fast_body.get(name) == full_body.get(name)
    for name in ("access_token", "id_token"):
        if name in fast_body:
            fast_header, fast_claims = jwt_parts(fast_body[name])
            full_header, full_claims = jwt_parts(full_body[name])
            assert fast_header == full_header
            assert {k: v for k, v in fast_claims.items() if k not in VARYING_CLAIMS} == \
                {k: v for k, v in full_claims.items() if k not in VARYING_CLAIMS}
            assert fast_claims["exp"] - fast_claims["iat"] == full_claims["exp"] - full_claims["iat"]


def refresh_token_of(provider, user) -> str:
    code = UserAgent(provider).sign_in(user["username"], client_id="web", scope="openid offline_access",
                                       resource="https://api.example.com")["code"]
    answer = token_request(provider, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT})
    return answer.json()["refresh_token"]


# An unknown parameter is ignored by the endpoint (RFC 6749 3.2) and sends a request the full way.
FULL_WAY = {"full_way": "1"}


@pytest.fixture
def machine_clients(provider):
    """A service client for each way of sending a secret (RFC 6749 2.3.1)."""
    register_clients(provider, [
        {"client_id": f"service-{method}", "token_endpoint_auth_method": f"client_secret_{method}",
         "grant_types": ["client_credentials"], "scopes": ["orders:read"]} for method in ("basic", "post")])


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_client_credentials_are_answered_before_flask_as_the_endpoint_would(provider, machine_clients,
                                                                           full_endpoint, auth):
    data = {"grant_type": "client_credentials", "scope": "orders:read openid orders:write",
            "resource": "https://api.example.com"}
    fast = token_request(provider, data, f"service-{auth}", auth)
    assert full_endpoint == []
    full = token_request(provider, {**data, **FULL_WAY}, f"service-{auth}", auth)
    assert len(full_endpoint) == 1
    same_answer(fast, full)
    claims = jwt_parts(fast.json()["access_token"])[1]
    assert fast.json()["scope"] == claims["scope"] == "orders:read"  # only what the client is registered for
    assert claims["aud"] == "https://api.example.com" and fast.json()["expires_in"] == 120
    assert fast.headers["Cache-Control"] == "no-store" and fast.headers["X-Content-Type-Options"] == "nosniff"


def test_a_refresh_is_answered_before_flask_as_the_endpoint_would(provider, user, full_endpoint):
    first = refresh_token_of(provider, user)
    full_endpoint.clear()
    fast = token_request(provider, {"grant_type": "refresh_token", "refresh_token": first})
    assert full_endpoint == []
    full = token_request(provider, {"grant_type": "refresh_token", "refresh_token": fast.json()["refresh_token"],
                                    **FULL_WAY})
    assert len(full_endpoint) == 1
    same_answer(fast, full)
    id_claims = jwt_parts(fast.json()["id_token"])[1]
    assert id_claims["sub"] == user["sub"] and "nonce" not in id_claims  # OIDC Core 12.2
    # the fast rotation's successor is an ordinary token of the family
    assert token_request(provider, {"grant_type": "refresh_token", "refresh_token": full.json()["refresh_token"]}
                         ).status_code == 200


def test_the_request_id_is_kept_or_made(provider, machine_clients, full_endpoint):
    data = {"grant_type": "client_credentials", "scope": "orders:read"}
    auth = ("service-basic", provider.secrets["service-basic"])
    kept = requests.post(f"{provider.url}/oidc/token", data=data, auth=auth, headers={"X-Request-ID": "rp-42.a"},
                         timeout=10)
    made = requests.post(f"{provider.url}/oidc/token", data=data, auth=auth, headers={"X-Request-ID": "bad id!"},
                         timeout=10)
    assert full_endpoint == []
    assert kept.headers["X-Request-ID"] == "rp-42.a"
    assert len(made.headers["X-Request-ID"]) == 32 and made.headers["X-Request-ID"] != "bad id!"


@pytest.mark.parametrize("case", ["wrong secret", "secret sent twice", "method not registered", "other client",
                                  "repeated parameter", "scope on refresh", "DPoP proof"])
def test_every_other_refresh_reaches_the_endpoint_and_spends_nothing(provider, user, machine_clients,
                                                                   full_endpoint, case):
    token = refresh_token_of(provider, user)
    full_endpoint.clear()
    data = {"grant_type": "refresh_token", "refresh_token": token}
    url, auth, headers = f"{provider.url}/oidc/token", ("web", provider.secrets["web"]), {}
    expected = 400, "invalid_grant"
    if case == "wrong secret":
        auth, expected = ("web", "not-the-secret"), (401, "invalid_client")
    elif case == "secret sent twice":  # RFC 6749 2.3: one method per request; the endpoint decides
        data |= {"client_id": "web", "client_secret": provider.secrets["web"]}
        expected = 200, None
    elif case == "method not registered":  # web is registered for client_secret_basic
        data |= {"client_id": "web", "client_secret": provider.secrets["web"]}
        auth, expected = None, (401, "invalid_client")
    elif case == "other client":
        register_clients(provider, [{"client_id": "other-web", "redirect_uris": [REDIRECT],
                                     "grant_types": ["authorization_code", "refresh_token"]}])
        auth = ("other-web", provider.secrets["other-web"])
    elif case == "repeated parameter":  # RFC 6749 3.2: parameters must not repeat
        data = [("grant_type", "refresh_token"), ("refresh_token", token), ("refresh_token", token)]
        expected = 400, "invalid_request"
    elif case == "scope on refresh":  # RFC 6749 6: more than was granted
        data |= {"scope": "openid profile email"}
        expected = 400, "invalid_scope"
    elif case == "DPoP proof":  # a confidential client's malformed proof: the endpoint judges it
        headers = {"DPoP": "not.a.proof"}
        expected = 400, "invalid_dpop_proof"
    answer = requests.post(url, data=data, auth=auth, headers=headers, timeout=10)
    assert len(full_endpoint) == 1, case
    assert answer.status_code == expected[0], answer.text
    if expected[1]:
        assert answer.json()["error"] == expected[1]
        # refused, so nothing was spent: the token still rotates, and the fast way
        again = token_request(provider, {"grant_type": "refresh_token", "refresh_token": token})
        assert again.status_code == 200, again.text
        assert len(full_endpoint) == 1


def test_a_token_replayed_after_a_fast_rotation_revokes_the_family(provider, user, full_endpoint):
    first = refresh_token_of(provider, user)
    second = token_request(provider, {"grant_type": "refresh_token", "refresh_token": first}).json()["refresh_token"]
    replay = token_request(provider, {"grant_type": "refresh_token", "refresh_token": first})
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    after = token_request(provider, {"grant_type": "refresh_token", "refresh_token": second})
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"  # RFC 9700 4.14.2


def test_a_disabled_account_gets_no_refresh_the_fast_way(provider, user, full_endpoint):
    token = refresh_token_of(provider, user)
    full_endpoint.clear()
    with provider.app.app_context():
        from oidc_provider.extensions import db
        from oidc_provider.models import User

        db.session.get(User, user["sub"]).disabled = True
        db.session.commit()
    answer = token_request(provider, {"grant_type": "refresh_token", "refresh_token": token})
    assert answer.status_code == 400 and len(full_endpoint) == 1


def refresh_rows(provider, token: str):
    """The rows of `token`'s family, oldest first, and the row of `token` itself."""
    from oidc_provider.extensions import db
    from oidc_provider.models import RefreshToken
    from oidc_provider.oauth.tokens import sha256_hex

    with provider.app.app_context():
        row = db.session.execute(db.select(RefreshToken).filter_by(token_hash=sha256_hex(token))).scalar_one()
        family = db.session.execute(db.select(RefreshToken).filter_by(family_id=row.family_id)
                                    .order_by(RefreshToken.id)).scalars().all()
        db.session.expunge_all()
    return family, row


def test_the_stored_successor_is_the_one_handed_out(provider, user, full_endpoint):
    """The fast path stores the successor as a copy of the presented token before signing: the
    copy must hold the access token it was answered with (revoking the family revokes it by jti
    until its exp), whatever lifetime the copy assumed."""
    from oidc_provider.extensions import db
    from oidc_provider.models import RefreshToken

    first = refresh_token_of(provider, user)
    _, presented = refresh_rows(provider, first)
    with provider.app.app_context():  # as if issued when the resource's tokens lived 5 seconds
        db.session.get(RefreshToken, presented.id).access_exp = presented.issued_at + 5
        db.session.commit()
    for token in (first, None):
        answer = token_request(provider, {"grant_type": "refresh_token", "refresh_token": token or successor})
        assert answer.status_code == 200 and full_endpoint == []
        successor = answer.json()["refresh_token"]
        claims = jwt_parts(answer.json()["access_token"])[1]
        assert claims["exp"] - claims["iat"] == 120  # the resource's lifetime (conftest)
        _, stored = refresh_rows(provider, successor)
        assert (stored.access_jti, stored.access_exp, stored.issued_at) == (claims["jti"], claims["exp"], claims["iat"])
        assert stored.rotated_at is None and stored.auth == presented.auth and stored.scope == presented.scope


def test_a_failure_after_the_claim_gives_the_token_back(provider, user, full_endpoint, monkeypatch,
                                                         no_fast_path_failure):
    """Claimed and copied, then the answer fails: the claim is undone and its copy dropped, so
    the full endpoint answers as if the request came first (not as a replay)."""
    from oidc_provider.oauth import fast_path

    def failing(*args):
        raise RuntimeError("the signing key is unreadable")

    token = refresh_token_of(provider, user)
    full_endpoint.clear()
    monkeypatch.setattr(fast_path, "refresh_id_token", failing)
    answer = token_request(provider, {"grant_type": "refresh_token", "refresh_token": token})
    assert answer.status_code == 200, answer.text
    assert len(full_endpoint) == 1
    assert [failure.getMessage() for failure in no_fast_path_failure] == \
        ["the fast path of /oidc/token failed; the full endpoint answers"]
    no_fast_path_failure.clear()
    family, presented = refresh_rows(provider, token)
    _, successor = refresh_rows(provider, answer.json()["refresh_token"])
    assert presented.rotated_at is not None and presented.revoked_at is None
    assert [row.id for row in family] == [presented.id, successor.id]  # no copy left behind
    monkeypatch.undo()
    assert token_request(provider, {"grant_type": "refresh_token", "refresh_token": answer.json()["refresh_token"]}
                         ).status_code == 200


def test_a_use_while_the_answer_is_signed_is_a_replay(provider, user, full_endpoint):
    """The fast path claims the token before it signs: a second use meanwhile finds it spent,
    and the endpoint revokes the family (RFC 9700 4.14.2), the first answer's successor too."""
    token = refresh_token_of(provider, user)
    tokens = provider.app.extensions["op"].tokens
    meanwhile = []

    def second_use_while_signing(spec):
        meanwhile.append(token_request(provider, {"grant_type": "refresh_token", "refresh_token": token}))
        return type(tokens).respond(tokens, spec)

    full_endpoint.clear()
    tokens.respond = second_use_while_signing
    try:
        first = token_request(provider, {"grant_type": "refresh_token", "refresh_token": token})
    finally:
        del tokens.respond
    assert first.status_code == 200
    assert meanwhile[0].status_code == 400 and meanwhile[0].json()["error"] == "invalid_grant"
    assert len(full_endpoint) == 1  # the second use only
    family, _ = refresh_rows(provider, token)
    assert len(family) == 2 and all(row.revoked_at is not None for row in family)
    again = token_request(provider, {"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


# -- the code exchange ---------------------------------------------------------------------------------

def code_exchange(agent, user, **params) -> tuple[dict, dict]:
    """A sign-in with PKCE, a nonce and a resource: the token request's form, the code included."""
    verifier, challenge = pkce_pair()
    code = agent.sign_in(user["username"], client_id="web", scope="openid offline_access", nonce="n-0S6",
                         code_challenge=challenge, code_challenge_method="S256",
                         resource="https://api.example.com", **params)["code"]
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
            "resource": "https://api.example.com"}


def family_of(provider, code: str) -> list:
    """The refresh tokens given for a code (their family is named after it)."""
    from oidc_provider.extensions import db
    from oidc_provider.models import RefreshToken
    from oidc_provider.oauth.tokens import sha256_hex

    with provider.app.app_context():
        return db.session.execute(db.select(RefreshToken).filter_by(family_id=sha256_hex(code))).scalars().all()


def test_a_code_exchange_is_answered_before_flask_as_the_endpoint_would(provider, user, full_endpoint):
    agent = UserAgent(provider)  # one browser: the second sign-in is the same session (sid, auth_time)
    first, second = code_exchange(agent, user), code_exchange(agent, user)
    full_endpoint.clear()
    fast = token_request(provider, first)
    assert full_endpoint == []
    full = token_request(provider, {**second, **FULL_WAY})
    assert len(full_endpoint) == 1
    same_answer(fast, full)
    id_claims = jwt_parts(fast.json()["id_token"])[1]
    assert id_claims["nonce"] == "n-0S6" and id_claims["sub"] == user["sub"] and id_claims["amr"] == ["pwd"]
    assert jwt_parts(fast.json()["access_token"])[1]["aud"] == "https://api.example.com"
    # single use, and the refresh token it gave rotates
    assert [row.token_hash for row in family_of(provider, first["code"])] != []
    assert token_request(provider, {"grant_type": "refresh_token", "refresh_token": fast.json()["refresh_token"]}
                         ).status_code == 200


def test_a_public_clients_code_and_refresh_are_answered_before_flask_as_the_endpoint_would(provider, user,
                                                                                          full_endpoint):
    """A mobile app (token_endpoint_auth_method none) sends its id and the PKCE verifier."""
    agent, forms = UserAgent(provider), []
    for _ in range(2):
        verifier, challenge = pkce_pair()
        code = agent.sign_in(user["username"], client_id="mobile", scope="openid offline_access",
                             code_challenge=challenge, code_challenge_method="S256")["code"]
        forms.append({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                      "code_verifier": verifier})
    full_endpoint.clear()
    fast = token_request(provider, forms[0], "mobile", "none")
    assert full_endpoint == []
    same_answer(fast, token_request(provider, {**forms[1], **FULL_WAY}, "mobile", "none"))
    refreshed = token_request(provider, {"grant_type": "refresh_token", "refresh_token": fast.json()["refresh_token"]},
                              "mobile", "none")
    assert refreshed.status_code == 200 and len(full_endpoint) == 1
    # a secret a public client does not have: the endpoint judges
    secret = token_request(provider, {"grant_type": "refresh_token", "client_id": "mobile", "client_secret": "x",
                                      "refresh_token": refreshed.json()["refresh_token"]}, None)
    assert secret.status_code == 401 and len(full_endpoint) == 2


@pytest.mark.parametrize("case", ["wrong verifier", "no verifier", "verifier without challenge",
                                  "other redirect_uri", "no redirect_uri", "unknown code", "another client's code",
                                  "resource not granted", "disabled account", "wrong secret", "repeated parameter",
                                  "DPoP proof"])
def test_every_other_code_exchange_reaches_the_endpoint(provider, user, full_endpoint, case):
    register_clients(provider, [{"client_id": "other-web", "redirect_uris": [REDIRECT],
                                 "grant_types": ["authorization_code", "refresh_token"]}])
    form = code_exchange(UserAgent(provider), user)
    full_endpoint.clear()
    client, headers, expected = ("web", provider.secrets["web"]), {}, (400, "invalid_grant")
    if case == "wrong verifier":
        form["code_verifier"] = pkce_pair()[0]
    elif case == "no verifier":
        del form["code_verifier"]
    elif case == "verifier without challenge":  # RFC 9700 4.8
        agent = UserAgent(provider)
        form["code"] = agent.sign_in(user["username"], client_id="web", scope="openid",
                                     resource="https://api.example.com")["code"]
        expected = 400, "invalid_request"
    elif case == "other redirect_uri":
        form["redirect_uri"] = REDIRECT + "/other"
    elif case == "no redirect_uri":
        del form["redirect_uri"]
    elif case == "unknown code":
        form["code"] = "not-a-code"
    elif case == "another client's code":
        client = ("other-web", provider.secrets["other-web"])
    elif case == "resource not granted":  # RFC 8707 2.2
        form["resource"] = "https://billing.example.com"
        expected = 400, "invalid_target"
    elif case == "disabled account":
        with provider.app.app_context():
            from oidc_provider.extensions import db
            from oidc_provider.models import User

            db.session.get(User, user["sub"]).disabled = True
            db.session.commit()
    elif case == "wrong secret":
        client, expected = ("web", "not-the-secret"), (401, "invalid_client")
    elif case == "repeated parameter":
        form = [*form.items(), ("code", form["code"])]
        expected = 400, "invalid_request"
    elif case == "DPoP proof":
        headers, expected = {"DPoP": "not.a.proof"}, (400, "invalid_dpop_proof")
    answer = requests.post(f"{provider.url}/oidc/token", data=form, auth=client, headers=headers, timeout=10)
    assert len(full_endpoint) == 1, case
    assert answer.status_code == expected[0] and answer.json()["error"] == expected[1], answer.text


def test_a_code_replayed_after_a_fast_exchange_revokes_what_it_gave(provider, user, full_endpoint):
    form = code_exchange(UserAgent(provider), user)
    tokens = token_request(provider, form).json()
    full_endpoint.clear()
    replay = token_request(provider, form)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert len(full_endpoint) == 1  # the spent code is the endpoint's to judge
    # RFC 6749 4.1.2: what the first use was given is revoked
    refresh = token_request(provider, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
    assert introspect(provider, tokens["access_token"]).json()["active"] is False


def exchange_with_another_use(provider, form: dict, before: str):
    """The code exchanged while another use of it (a request in another worker) is counted just
    before the fast path's `before` step (a TokenService method)."""
    from oidc_provider.oauth.tokens import sha256_hex

    op = provider.app.extensions["op"]
    step = getattr(type(op.tokens), before)

    def another_use_first(*args):
        op.store.incr(f"code-uses:{sha256_hex(form['code'])}", 600)
        return step(op.tokens, *args)

    setattr(op.tokens, before, another_use_first)
    try:
        return token_request(provider, form)
    finally:
        delattr(op.tokens, before)


def test_a_code_used_elsewhere_while_the_answer_is_signed_is_the_endpoints_to_judge(provider, user,
                                                                                 full_endpoint):
    """The fast path counts its use once its answer is signed: when another use of the code came
    first, it stores nothing, and the endpoint refuses the code."""
    form = code_exchange(UserAgent(provider), user)
    full_endpoint.clear()
    answer = exchange_with_another_use(provider, form, before="respond")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant", answer.text
    assert len(full_endpoint) == 1
    assert family_of(provider, form["code"]) == []  # no token set was issued


def test_a_replay_racing_a_fast_exchange_revokes_what_it_gave(provider, user, full_endpoint):
    """A replay counted while the fast path stores its tokens (after its own count, before the code
    is spent) may have missed them: the fast path revokes them, as the Authlib grant does."""
    form = code_exchange(UserAgent(provider), user)
    full_endpoint.clear()
    answer = exchange_with_another_use(provider, form, before="save_refresh_token")
    assert answer.status_code == 200 and full_endpoint == []
    rows = family_of(provider, form["code"])
    assert len(rows) == 1 and rows[0].revoked_at is not None  # stored, then revoked (RFC 6749 4.1.2)
    given = answer.json()
    refresh = token_request(provider, {"grant_type": "refresh_token", "refresh_token": given["refresh_token"]})
    assert refresh.status_code == 400 and introspect(provider, given["access_token"]).json()["active"] is False


# -- userinfo ----------------------------------------------------------------------------------------

def access_token_of(provider, user, scope="openid profile email phone", **params) -> str:
    code = UserAgent(provider).sign_in(user["username"], client_id="web", scope=scope, **params)["code"]
    answer = token_request(provider, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                      **({"resource": params["resource"]} if "resource" in params else {})})
    return answer.json()["access_token"]


def userinfo(provider, token: str, query: str = "", scheme: str = "Bearer", method: str = "GET"):
    return requests.request(method, f"{provider.url}/oidc/userinfo{query}", timeout=10,
                            headers={"Authorization": f"{scheme} {token}"})


def test_userinfo_is_answered_before_flask_as_the_endpoint_would(provider, user, full_userinfo):
    token = access_token_of(provider, user)
    fast = userinfo(provider, token)
    assert not full_userinfo
    full = userinfo(provider, token, query="?full_way=1")  # a query string: the full endpoint (it ignores it)
    assert len(full_userinfo) == 1
    assert fast.status_code == full.status_code == 200, (fast.text, full.text)
    assert {k: v for k, v in fast.headers.items() if k not in VARYING_HEADERS} == \
        {k: v for k, v in full.headers.items() if k not in VARYING_HEADERS}
    assert fast.content == full.content
    assert fast.json() == {"sub": user["sub"], "preferred_username": user["username"], "name": "Ada Lovelace",
                           "email": f"{user['username']}@example.com", "email_verified": True, "phone_number": "+15550123",
                           "phone_number_verified": True}


@pytest.mark.parametrize("case", ["no openid", "another resource", "revoked", "disabled account", "DPoP scheme",
                                  "not a token", "POST"])
def test_every_other_userinfo_request_reaches_the_endpoint(provider, user, full_userinfo, case):
    token = access_token_of(provider, user, scope="profile" if case == "no openid" else "openid profile",
                            **({"resource": "https://api.example.com"} if case == "another resource" else {}))
    full_userinfo.clear()
    scheme, method, expected = "Bearer", "GET", (401, "invalid_token")
    if case == "no openid":
        expected = 403, "insufficient_scope"
    elif case == "revoked":
        revoked = requests.post(f"{provider.url}/oidc/revoke", data={"token": token}, timeout=10,
                                auth=("web", provider.secrets["web"]))
        assert revoked.status_code == 200
    elif case == "disabled account":
        with provider.app.app_context():
            from oidc_provider.extensions import db
            from oidc_provider.models import User

            db.session.get(User, user["sub"]).disabled = True
            db.session.commit()
    elif case == "DPoP scheme":  # a Bearer token sent as DPoP (RFC 9449 7.1)
        scheme = "DPoP"
    elif case == "not a token":
        token = "not-a-token"
    elif case == "POST":  # OIDC Core 5.3.1 allows it; the full endpoint answers it
        method, expected = "POST", (200, None)
    answer = userinfo(provider, token, scheme=scheme, method=method)
    assert len(full_userinfo) == 1, case
    assert answer.status_code == expected[0], answer.text
    if expected[1]:
        assert expected[1] in answer.headers["WWW-Authenticate"]


# -- discovery and JWKS ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server",
                                  "/oidc/jwks"])
def test_published_documents_are_answered_before_flask_as_the_views_would(provider, path):
    reached = reaching_flask(provider, path)
    counted = next(reached)
    try:
        fast = requests.get(f"{provider.url}{path}", timeout=10)
        assert not counted
        full = requests.get(f"{provider.url}{path}?full_way=1", timeout=10)  # a query: Flask's view
        head = requests.head(f"{provider.url}{path}", timeout=10)  # HEAD: Flask's view
        assert len(counted) == 2
    finally:
        next(reached, None)
    assert fast.status_code == full.status_code == head.status_code == 200
    assert {k: v for k, v in fast.headers.items() if k not in VARYING_HEADERS} == \
        {k: v for k, v in full.headers.items() if k not in VARYING_HEADERS} == \
        {k: v for k, v in head.headers.items() if k not in VARYING_HEADERS}
    assert fast.content == full.content and fast.headers["Content-Length"] == head.headers["Content-Length"]
    if "well-known" in path:
        assert fast.json()["issuer"] == provider.url
    else:
        assert fast.json()["keys"]


# -- introspection -----------------------------------------------------------------------------------

def introspect(provider, token: str, client: str = "resource-server", extra: dict | None = None):
    return requests.post(f"{provider.url}/oidc/introspect", data={"token": token, **(extra or {})},
                         auth=(client, provider.secrets[client]), timeout=10)


def test_introspection_is_answered_before_flask_as_the_endpoint_would(provider, user):
    token = access_token_of(provider, user, resource="https://api.example.com")
    reached = reaching_flask(provider, "/oidc/introspect")
    counted = next(reached)
    try:
        fast = introspect(provider, token)
        assert not counted
        full = introspect(provider, token, extra=FULL_WAY)
        assert len(counted) == 1
    finally:
        next(reached, None)
    assert fast.status_code == full.status_code == 200, (fast.text, full.text)
    assert {k: v for k, v in fast.headers.items() if k not in VARYING_HEADERS} == \
        {k: v for k, v in full.headers.items() if k not in VARYING_HEADERS}
    assert fast.content == full.content
    answer = fast.json()
    assert answer["active"] is True and answer["sub"] == user["sub"] and answer["token_type"] == "Bearer"
    assert answer["amr"] == ["pwd"] and answer["aud"] == "https://api.example.com" and answer["auth_time"]


@pytest.mark.parametrize("case", ["refresh token", "revoked", "not a token", "client not allowed", "wrong secret",
                                  "no token"])
def test_every_other_introspection_reaches_the_endpoint(provider, user, case):
    tokens = token_request(provider, {
        "grant_type": "authorization_code", "redirect_uri": REDIRECT,
        "code": UserAgent(provider).sign_in(user["username"], client_id="web", scope="openid offline_access")["code"],
    }).json()
    token, client, extra, expected = tokens["access_token"], "resource-server", None, (200, False)
    if case == "refresh token":
        token, expected = tokens["refresh_token"], (200, True)
    elif case == "revoked":
        assert requests.post(f"{provider.url}/oidc/revoke", data={"token": token}, timeout=10,
                             auth=("web", provider.secrets["web"])).status_code == 200
    elif case == "not a token":
        token = "not-a-token"
    elif case == "client not allowed":  # neither the token's client, nor an audience, nor can_introspect
        client = "backend"
    elif case == "wrong secret":
        expected = 401, None
    elif case == "no token":
        token, expected = "", (400, None)
    reached = reaching_flask(provider, "/oidc/introspect")
    counted = next(reached)
    try:
        if case == "wrong secret":
            answer = requests.post(f"{provider.url}/oidc/introspect", data={"token": token}, timeout=10,
                                   auth=("resource-server", "not-the-secret"))
        else:
            answer = introspect(provider, token, client, extra)
        assert len(counted) == 1, case
    finally:
        next(reached, None)
    assert answer.status_code == expected[0], answer.text
    if expected[1] is not None:
        assert answer.json()["active"] is expected[1]
