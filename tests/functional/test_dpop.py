"""DPoP (RFC 9449) end to end, on both backends: a client with its own key (PyJWT and
cryptography, tests/dpop_proofs.py) gets tokens bound to it at the token endpoint, uses them at
userinfo and at a resource server built on oidc_provider.resource_server, and everything an
attacker holding a stolen token or proof tries is refused."""

from __future__ import annotations

import json
import os
import re
import threading
import time

import jwt
import pytest
import requests
from flask import Flask, g, jsonify

from examples.resource_server import create_app as create_example_api
from oidc_provider.oauth.dpop import NonceSource, ProofChecker
from oidc_provider.resource_server import ResourceServer
from oidc_provider.settings.clients import ClientRegistry
from tests.conftest import BACKENDS, REDIRECT, callback_params, pkce_pair, start_provider
from tests.dpop_proofs import DPoPKey, b64url, unsigned_proof
from tests.servers import serving_app

API = "https://api.example.com"
DPOP_CLIENTS = [
    # RFC 9449 5.2: dpop_bound_access_tokens, every token request must carry a proof
    {"client_id": "dpop-mobile", "client_name": "DPoP app", "token_endpoint_auth_method": "none",
     "redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"],
     "scopes": ["openid", "profile", "offline_access"], "first_party": True, "dpop_bound_access_tokens": True},
    # proofs must carry a nonce we issued (RFC 9449 8)
    {"client_id": "dpop-nonce", "client_name": "DPoP nonce app", "token_endpoint_auth_method": "none",
     "redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"],
     "scopes": ["openid", "offline_access"], "first_party": True, "dpop_require_nonce": True},
]


@pytest.fixture(scope="module", params=list(BACKENDS), ids=list(BACKENDS))
def provider(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"dpop-{request.param}")
    running, stop = start_provider(base, request.param)
    clients = base / "clients.yaml"
    data = json.loads(clients.read_text())  # start_provider writes JSON, which is YAML
    clients.write_text(json.dumps({"clients": data["clients"] + DPOP_CLIENTS}))
    time.sleep(ClientRegistry.CHECK_INTERVAL + 0.1)  # the registry looks at the file once a second
    yield running
    stop()


# -- a DPoP client -------------------------------------------------------------------------------

def token(provider, data: dict, client: str = "dpop-mobile", proof: str | None = None) -> requests.Response:
    """A token request; public clients send client_id, confidential ones HTTP Basic."""
    kwargs = {}
    if client in provider.secrets:
        kwargs["auth"] = (client, provider.secrets[client])
    else:
        data = {**data, "client_id": client}
    headers = {"DPoP": proof} if proof is not None else {}
    return requests.post(f"{provider.url}/oidc/token", data=data, headers=headers, timeout=15, **kwargs)


def token_url(provider) -> str:
    return f"{provider.url}/oidc/token"


def sign_in(agent, user, client: str = "dpop-mobile", scope: str = "openid offline_access", **params):
    verifier, challenge = pkce_pair()
    result = agent.sign_in(user["username"], client_id=client, scope=scope, code_challenge=challenge,
                           code_challenge_method="S256", **params)
    return {"grant_type": "authorization_code", "code": result["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier}


def dpop_tokens(provider, agent, user, key: DPoPKey, client: str = "dpop-mobile") -> dict:
    answer = token(provider, sign_in(agent, user, client), client, key.proof("POST", token_url(provider)))
    assert answer.status_code == 200, answer.text
    return answer.json()


def claims_of(provider, access_token: str) -> dict:
    """Verified with PyJWT against the published JWKS."""
    signing = jwt.PyJWKClient(f"{provider.url}/oidc/jwks").get_signing_key_from_jwt(access_token)
    return jwt.decode(access_token, signing.key, algorithms=["RS256"], options={"verify_aud": False})


def userinfo(provider, access_token: str, proof: str | None = None, scheme: str = "DPoP") -> requests.Response:
    headers = {"Authorization": f"{scheme} {access_token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return requests.get(f"{provider.url}/oidc/userinfo", headers=headers, timeout=10)


def introspect(provider, value: str) -> dict:
    return requests.post(f"{provider.url}/oidc/introspect", data={"token": value},
                         auth=("resource-server", provider.secrets["resource-server"]), timeout=10).json()


def challenge_of(response: requests.Response) -> tuple[str, dict]:
    header = response.headers["WWW-Authenticate"]
    params = {name: re.sub(r"\\(.)", r"\1", value)
              for name, value in re.findall(r'([A-Za-z_]+)="((?:[^"\\]|\\.)*)"', header)}
    return header.split(" ", 1)[0].rstrip(","), params


def error_of(response: requests.Response) -> str:
    return response.json()["error"]


# -- discovery and the happy paths ---------------------------------------------------------------

def test_discovery_advertises_the_proof_algorithms(provider):
    assert provider.discovery()["dpop_signing_alg_values_supported"] == ["ES256", "RS256", "PS256", "EdDSA"]


def test_code_flow_with_pkce_and_dpop_binds_the_tokens_to_the_key(provider, user, agent):
    key = DPoPKey("ES256")
    grant = sign_in(agent, user)
    # dpop_bound_access_tokens: no proof, no tokens; checked before the code is spent
    refused = token(provider, grant)
    assert refused.status_code == 400 and error_of(refused) == "invalid_dpop_proof"
    answer = token(provider, grant, proof=key.proof("POST", token_url(provider)))
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    assert tokens["token_type"] == "DPoP" and tokens["refresh_token"]
    claims = claims_of(provider, tokens["access_token"])
    assert claims["cnf"] == {"jkt": key.jkt} and claims["sub"] == user["sub"]

    info = userinfo(provider, tokens["access_token"],
                    key.proof("GET", f"{provider.url}/oidc/userinfo", access_token=tokens["access_token"]))
    assert info.status_code == 200 and info.json()["sub"] == user["sub"]
    posted = requests.post(f"{provider.url}/oidc/userinfo", timeout=10, headers={
        "Authorization": f"DPoP {tokens['access_token']}",
        "DPoP": key.proof("POST", f"{provider.url}/oidc/userinfo", access_token=tokens["access_token"])})
    assert posted.status_code == 200

    # RFC 7662 with RFC 9449 6.2: the binding is visible to resource servers
    answer = introspect(provider, tokens["access_token"])
    assert answer["active"] and answer["token_type"] == "DPoP" and answer["cnf"] == {"jkt": key.jkt}
    refresh = introspect(provider, tokens["refresh_token"])
    assert refresh["active"] and refresh["cnf"] == {"jkt": key.jkt}  # a public client's: bound


@pytest.mark.parametrize("alg", ["RS256", "PS256", "EdDSA"])
def test_every_advertised_algorithm_works(provider, alg):
    key = DPoPKey(alg)
    answer = token(provider, {"grant_type": "client_credentials", "scope": "orders:read"}, "backend",
                   key.proof("POST", token_url(provider)))
    assert answer.status_code == 200, answer.text
    assert jwt.decode(answer.json()["access_token"], options={"verify_signature": False})["cnf"]["jkt"] == key.jkt


def test_a_public_clients_refresh_token_is_bound_to_its_key(provider, user, agent):
    """RFC 9449 5: refresh only with a proof by the same key; `mobile` is not required to use DPoP."""
    key, thief = DPoPKey(), DPoPKey()
    tokens = dpop_tokens(provider, agent, user, key, client="mobile")
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    without = token(provider, refresh, "mobile")
    assert without.status_code == 400 and error_of(without) == "invalid_dpop_proof"
    assert "bound" in without.json()["error_description"]
    stolen = token(provider, refresh, "mobile", thief.proof("POST", token_url(provider)))
    assert stolen.status_code == 400 and error_of(stolen) == "invalid_grant"
    # the refused attempts spent nothing: the owner still refreshes, and stays bound
    renewed = token(provider, refresh, "mobile", key.proof("POST", token_url(provider)))
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["token_type"] == "DPoP"
    assert claims_of(provider, renewed.json()["access_token"])["cnf"]["jkt"] == key.jkt
    again = {"grant_type": "refresh_token", "refresh_token": renewed.json()["refresh_token"]}
    assert error_of(token(provider, again, "mobile", thief.proof("POST", token_url(provider)))) == "invalid_grant"
    assert token(provider, again, "mobile", key.proof("POST", token_url(provider))).status_code == 200


def test_a_confidential_clients_refresh_token_is_not_bound(provider, user, agent):
    """RFC 9449 5: client authentication already binds it; each access token follows its proof."""
    key, other = DPoPKey(), DPoPKey()
    tokens = dpop_tokens(provider, agent, user, key, client="web")
    assert tokens["token_type"] == "DPoP"
    assert "cnf" not in introspect(provider, tokens["refresh_token"])
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    renewed = token(provider, refresh, "web", other.proof("POST", token_url(provider)))
    assert renewed.status_code == 200
    assert claims_of(provider, renewed.json()["access_token"])["cnf"]["jkt"] == other.jkt
    plain = token(provider, {"grant_type": "refresh_token", "refresh_token": renewed.json()["refresh_token"]}, "web")
    assert plain.status_code == 200 and plain.json()["token_type"] == "Bearer"
    assert "cnf" not in claims_of(provider, plain.json()["access_token"])


def test_client_credentials_with_and_without_dpop(provider):
    key = DPoPKey()
    bound = token(provider, {"grant_type": "client_credentials", "scope": "orders:read", "resource": API},
                  "backend", key.proof("POST", token_url(provider)))
    assert bound.status_code == 200 and bound.json()["token_type"] == "DPoP"
    claims = claims_of(provider, bound.json()["access_token"])
    assert claims["cnf"] == {"jkt": key.jkt} and claims["aud"] == API
    plain = token(provider, {"grant_type": "client_credentials", "scope": "orders:read"}, "backend")
    assert plain.status_code == 200 and plain.json()["token_type"] == "Bearer"
    assert "cnf" not in claims_of(provider, plain.json()["access_token"])


def test_dpop_jkt_binds_the_authorization_code(provider, user, agent):
    """RFC 9449 10: the code is good only with a proof by the key named at the authorization."""
    key, thief = DPoPKey(), DPoPKey()
    grant = sign_in(agent, user, client="mobile", dpop_jkt=key.jkt)
    stolen = token(provider, grant, "mobile", thief.proof("POST", token_url(provider)))
    assert stolen.status_code == 400 and error_of(stolen) == "invalid_grant"
    grant = sign_in(agent, user, client="mobile", dpop_jkt=key.jkt)
    without = token(provider, grant, "mobile")
    assert without.status_code == 400 and error_of(without) == "invalid_dpop_proof"
    grant = sign_in(agent, user, client="mobile", dpop_jkt=key.jkt)
    answer = token(provider, grant, "mobile", key.proof("POST", token_url(provider)))
    assert answer.status_code == 200 and claims_of(provider, answer.json()["access_token"])["cnf"]["jkt"] == key.jkt
    # a malformed thumbprint is an invalid request, redirected to the client
    _, challenge = pkce_pair()
    page = agent.authorize(client_id="mobile", state="s1", code_challenge=challenge, code_challenge_method="S256",
                           dpop_jkt="not-a-thumbprint")
    params = callback_params(page)
    assert params["error"] == "invalid_request" and params["state"] == "s1"
    assert "dpop_jkt" in params["error_description"]


# -- attacks at the token endpoint -----------------------------------------------------------------

def test_proofs_that_are_replayed_misdirected_or_forged_are_refused(provider):
    key = DPoPKey()
    url = token_url(provider)
    form = {"grant_type": "client_credentials", "scope": "orders:read"}
    proof = key.proof("POST", url)
    assert token(provider, form, "backend", proof).status_code == 200
    cases = {
        "replayed": (proof, "already used"),
        "for another URL": (key.proof("POST", f"{provider.url}/oidc/userinfo"), "URL"),
        "for another server": (key.proof("POST", "https://op.example.net/oidc/token"), "URL"),
        "for another method": (key.proof("GET", url), "method"),
        "too old": (key.proof("POST", url, iat=int(time.time()) - 120), "too old"),
        "from the future": (key.proof("POST", url, iat=int(time.time()) + 60), "future"),
        "alg none": (unsigned_proof("POST", url, "none"), "alg"),
        "HS256": (unsigned_proof("POST", url, "HS256", key="s" * 32), "alg"),
        "a private key in jwk": (key.proof("POST", url, header={"jwk": key.private_jwk}), "public key"),
        "signed by another key": (DPoPKey().proof("POST", url, header={"jwk": key.jwk}), "signature"),
        "typ JWT": (key.proof("POST", url, header={"typ": "JWT"}), "typ"),
        "two proofs": (f"{key.proof('POST', url)}, {key.proof('POST', url)}", "exactly one"),
        "garbage": ("x" * 100, "well-formed"),
    }
    for name, (value, reason) in cases.items():
        answer = token(provider, form, "backend", value)
        assert answer.status_code == 400, name
        assert error_of(answer) == "invalid_dpop_proof", name
        assert reason in answer.json()["error_description"], (name, answer.json())


def test_htu_is_compared_without_query_and_after_normalization(provider):
    key = DPoPKey()
    shouted = provider.url.replace("http://", "HTTP://") + "/oidc/token?ignored=1#too"
    answer = token(provider, {"grant_type": "client_credentials"}, "backend", key.proof("POST", shouted))
    assert answer.status_code == 200, answer.text


def test_one_proof_sent_twice_at_once_wins_once(provider):
    proof = DPoPKey().proof("POST", token_url(provider))
    results, start = [], threading.Barrier(6)

    def use():
        start.wait()
        results.append(token(provider, {"grant_type": "client_credentials"}, "backend", proof).status_code)

    threads = [threading.Thread(target=use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200, 400, 400, 400, 400, 400]


# -- attacks at userinfo ------------------------------------------------------------------------------

def test_userinfo_refuses_stolen_and_misused_dpop_tokens(provider, user, agent):
    key, thief = DPoPKey(), DPoPKey()
    access = dpop_tokens(provider, agent, user, key)["access_token"]
    url = f"{provider.url}/oidc/userinfo"

    as_bearer = userinfo(provider, access, scheme="Bearer")
    assert as_bearer.status_code == 401 and error_of(as_bearer) == "invalid_token"
    assert challenge_of(as_bearer) == ("Bearer", {"error": "invalid_token",
                                                  "error_description": as_bearer.json()["error_description"]})
    cases = {
        "a thief's key": (thief.proof("GET", url, access_token=access), "invalid_token"),
        "no proof": (None, "invalid_dpop_proof"),
        "no ath": (key.proof("GET", url), "invalid_dpop_proof"),
        "ath of another token": (key.proof("GET", url, access_token=access + "x"), "invalid_dpop_proof"),
        "the token endpoint's proof": (key.proof("POST", token_url(provider), access_token=access),
                                       "invalid_dpop_proof"),
        "another method": (key.proof("POST", url, access_token=access), "invalid_dpop_proof"),
    }
    for name, (proof, error) in cases.items():
        refused = userinfo(provider, access, proof)
        assert refused.status_code == 401 and error_of(refused) == error, (name, refused.text)
        scheme, params = challenge_of(refused)
        assert scheme == "DPoP" and params["error"] == error, name
        assert params["algs"] == "ES256 RS256 PS256 EdDSA", name

    proof = key.proof("GET", url, access_token=access)
    assert userinfo(provider, access, proof).status_code == 200
    replayed = userinfo(provider, access, proof)
    assert replayed.status_code == 401 and "already used" in replayed.json()["error_description"]


def test_userinfo_offers_both_schemes_and_keeps_bearer_tokens_bearer(provider, user, agent):
    bare = requests.get(f"{provider.url}/oidc/userinfo", timeout=10)
    assert bare.status_code == 401
    assert bare.headers["WWW-Authenticate"] == 'Bearer realm="userinfo", DPoP algs="ES256 RS256 PS256 EdDSA"'
    grant = sign_in(agent, user, client="web")
    bearer = token(provider, grant, "web").json()["access_token"]
    assert userinfo(provider, bearer, scheme="Bearer").status_code == 200
    url = f"{provider.url}/oidc/userinfo"
    as_dpop = userinfo(provider, bearer, DPoPKey().proof("GET", url, access_token=bearer))
    assert as_dpop.status_code == 401 and error_of(as_dpop) == "invalid_token"


def test_the_direct_api_refuses_a_dpop_token_as_bearer(provider, user):
    key = DPoPKey()
    bound = token(provider, {"grant_type": "client_credentials", "scope": "auth.password"}, "api-backend",
                  key.proof("POST", token_url(provider))).json()["access_token"]
    body = {"username": user["username"], "password": user["password"], "redirect_uri": "https://domain.com/verify"}
    refused = requests.post(f"{provider.url}/v1/auth/password/login", json=body, timeout=10,
                            headers={"Authorization": f"Bearer {bound}"})
    assert refused.status_code == 401 and error_of(refused) == "invalid_token"
    assert "bound" in refused.json()["error_description"]


# -- nonces ---------------------------------------------------------------------------------------------

def test_nonce_on_demand_at_the_token_endpoint_and_userinfo(provider, user, agent):
    key = DPoPKey()
    url = token_url(provider)
    grant = sign_in(agent, user, client="dpop-nonce")
    asked = token(provider, grant, "dpop-nonce", key.proof("POST", url))
    assert asked.status_code == 400 and error_of(asked) == "use_dpop_nonce"  # RFC 9449 8
    nonce = asked.headers["DPoP-Nonce"]
    # the code was not spent by the first try
    answer = token(provider, grant, "dpop-nonce", key.proof("POST", url, nonce=nonce))
    assert answer.status_code == 200, answer.text
    assert answer.headers["DPoP-Nonce"]  # 8.2: the next one comes with the answer
    tokens = answer.json()

    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    lifetime = provider.op.settings.dpop.nonce_lifetime
    stale = NonceSource(provider.op.secret.derive("dpop-nonce"), lifetime).issue(time.time() - 3 * lifetime)
    for bad in (None, stale, "made-up", b64url(os.urandom(32))):
        again = token(provider, refresh, "dpop-nonce", key.proof("POST", url, nonce=bad))
        assert again.status_code == 400 and error_of(again) == "use_dpop_nonce", bad
        assert again.headers["DPoP-Nonce"]
    renewed = token(provider, refresh, "dpop-nonce", key.proof("POST", url, nonce=again.headers["DPoP-Nonce"]))
    assert renewed.status_code == 200, renewed.text

    # RFC 9449 9: at a resource, 401 with a DPoP challenge and the nonce to use
    access = renewed.json()["access_token"]
    info_url = f"{provider.url}/oidc/userinfo"
    asked = userinfo(provider, access, key.proof("GET", info_url, access_token=access))
    assert asked.status_code == 401 and challenge_of(asked)[0] == "DPoP"
    assert challenge_of(asked)[1]["error"] == "use_dpop_nonce" and asked.headers["DPoP-Nonce"]
    info = userinfo(provider, access, key.proof("GET", info_url, access_token=access,
                                                nonce=asked.headers["DPoP-Nonce"]))
    assert info.status_code == 200 and info.json()["sub"] == user["sub"]


def test_nonce_required_for_every_client_by_the_global_setting(tmp_path):
    running, stop = start_provider(tmp_path, "sqlite-sql", {"dpop": {"require_nonce": True}})
    try:
        key, url = DPoPKey(), token_url(running)
        form = {"grant_type": "client_credentials"}
        asked = token(running, form, "backend", key.proof("POST", url))
        assert asked.status_code == 400 and error_of(asked) == "use_dpop_nonce"
        ok = token(running, form, "backend", key.proof("POST", url, nonce=asked.headers["DPoP-Nonce"]))
        assert ok.status_code == 200 and ok.json()["token_type"] == "DPoP"
        assert token(running, form, "backend").json()["token_type"] == "Bearer"  # DPoP stays optional
    finally:
        stop()


def test_disabled_dpop_is_not_advertised_and_proofs_are_ignored(tmp_path):
    running, stop = start_provider(tmp_path, "sqlite-sql", {"dpop": {"enabled": False}})
    try:
        assert "dpop_signing_alg_values_supported" not in running.discovery()
        answer = token(running, {"grant_type": "client_credentials"}, "backend",
                       DPoPKey().proof("POST", token_url(running)))
        assert answer.status_code == 200 and answer.json()["token_type"] == "Bearer"
        assert "cnf" not in jwt.decode(answer.json()["access_token"], options={"verify_signature": False})
    finally:
        stop()


# -- the resource-server helper ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api(provider):
    with serving_app(create_example_api(provider.url, API)) as url:
        yield url


def api_token(provider, key: DPoPKey) -> str:
    answer = token(provider, {"grant_type": "client_credentials", "scope": "orders:read", "resource": API},
                   "backend", key.proof("POST", token_url(provider)))
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def test_resource_server_helper_takes_dpop_tokens_only_with_proofs(provider, api):
    key, thief = DPoPKey(), DPoPKey()
    access = api_token(provider, key)
    orders = f"{api}/orders"

    def get(proof, scheme="DPoP"):
        headers = {"Authorization": f"{scheme} {access}", **({"DPoP": proof} if proof else {})}
        return requests.get(orders, headers=headers, timeout=10)

    proof = key.proof("GET", orders, access_token=access)
    answer = get(proof)
    assert answer.status_code == 200 and answer.json()["sub"] == "backend"
    cases = {
        "replayed": (proof, "DPoP", "invalid_dpop_proof"),
        "as Bearer": (None, "Bearer", "invalid_token"),
        "a thief's key": (thief.proof("GET", orders, access_token=access), "DPoP", "invalid_token"),
        "no proof": (None, "DPoP", "invalid_dpop_proof"),
        "no ath": (key.proof("GET", orders), "DPoP", "invalid_dpop_proof"),
        "wrong ath": (key.proof("GET", orders, access_token="other"), "DPoP", "invalid_dpop_proof"),
        "another URL": (key.proof("GET", f"{api}/payments", access_token=access), "DPoP", "invalid_dpop_proof"),
        "another method": (key.proof("POST", orders, access_token=access), "DPoP", "invalid_dpop_proof"),
        "too old": (key.proof("GET", orders, access_token=access, iat=int(time.time()) - 300), "DPoP",
                    "invalid_dpop_proof"),
    }
    for name, (value, scheme, error) in cases.items():
        refused = get(value, scheme)
        assert refused.status_code == 401 and error_of(refused) == error, (name, refused.text)
        assert challenge_of(refused)[0] == scheme and challenge_of(refused)[1]["error"] == error, name
        if scheme == "DPoP":
            assert challenge_of(refused)[1]["algs"] == "ES256 RS256 PS256 EdDSA"


def test_resource_server_helper_can_demand_nonces(provider):
    app = Flask(__name__)
    rs = ResourceServer(provider.url, API, dpop=ProofChecker(nonces=NonceSource(os.urandom(32))))

    @app.get("/orders")
    @rs.require("orders:read")
    def orders():
        return jsonify({"sub": g.access_token["sub"]})

    with serving_app(app) as url:
        public = rs.public_url = url.replace("127.0.0.1", "localhost")  # as a proxy in front would name it
        key = DPoPKey("EdDSA")
        access = api_token(provider, key)
        headers = {"Authorization": f"DPoP {access}"}
        asked = requests.get(f"{url}/orders", timeout=10,
                             headers={**headers, "DPoP": key.proof("GET", f"{public}/orders", access_token=access)})
        assert asked.status_code == 401 and error_of(asked) == "use_dpop_nonce"
        assert challenge_of(asked)[0] == "DPoP" and asked.headers["DPoP-Nonce"]
        proof = key.proof("GET", f"{public}/orders", access_token=access, nonce=asked.headers["DPoP-Nonce"])
        answer = requests.get(f"{url}/orders", timeout=10, headers={**headers, "DPoP": proof})
        assert answer.status_code == 200 and answer.json() == {"sub": "backend"}
        # the address the proxy hides is not the one clients sign
        inner = key.proof("GET", f"{url}/orders", access_token=access, nonce=asked.headers["DPoP-Nonce"])
        refused = requests.get(f"{url}/orders", timeout=10, headers={**headers, "DPoP": inner})
        assert refused.status_code == 401 and "URL" in refused.json()["error_description"]
