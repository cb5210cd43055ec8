"""A strict outside client library, not ours: panva's oauth4webapi (npm) runs PAR + PKCE + DPoP
end to end over HTTP against the provider, the user signing in through the pages in between.

oauth4webapi checks everything a careful relying party should: discovery issuer, the PAR
response, `iss` in the authorization response (RFC 9207), state, the token response shape,
DPoP token type, the ID token's claims (iss, aud, exp, iat, nonce, auth_time) and signature,
the userinfo subject, and DPoP nonce handling.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jwt
import pytest

from tests.conftest import IN_CI, PASSWORD, REDIRECT

INTEROP = Path(__file__).resolve().parent.parent / "interop"


@pytest.fixture(scope="module")
def oauth4webapi():
    if shutil.which("node") is None or not (INTEROP / "node_modules" / "oauth4webapi").exists():
        message = "node and tests/interop/node_modules are needed (make test runs npm ci there)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return INTEROP / "par_dpop_client.mjs"


def run_client(script, provider, agent, user, client_id="mobile"):
    """Start the outside client, sign the user in at the URL it prints, hand it the callback."""
    process = subprocess.Popen(["node", str(script), provider.url, client_id, REDIRECT], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(process.stdout.readline() or json.dumps({"error": process.stderr.read()}))
        assert "authorization_url" in first, first
        page = agent.go(first["authorization_url"])
        if 'name="password"' in page.text:
            page = agent.login(page, user["username"], PASSWORD)
        if page.status_code == 200 and 'value="approve"' in page.text:
            page = agent.submit(page, {"action": "approve"})
        assert page.status_code in (302, 303), page.text[:500]
        process.stdin.write(json.dumps({"callback_url": page.headers["Location"]}) + "\n")
        process.stdin.flush()
        result = json.loads(process.stdout.readline() or json.dumps({"error": process.stderr.read()}))
        process.wait(30)
        return first, result, process.returncode
    finally:
        if process.poll() is None:
            process.kill()


def test_par_pkce_and_dpop_end_to_end(oauth4webapi, provider, user, agent):
    first, result, code = run_client(oauth4webapi, provider, agent, user)
    assert code == 0 and "error" not in result, result
    assert first["authorization_url"].startswith(f"{provider.url}/oidc/auth?client_id=mobile&request_uri=urn")
    token, claims = result["token"], result["id_token_claims"]
    assert token["token_type"].lower() == "dpop"
    assert claims["sub"] == user["sub"] and claims["iss"] == provider.url and claims["aud"] == "mobile"
    assert result["userinfo"]["sub"] == user["sub"]
    access = jwt.decode(token["access_token"], options={"verify_signature": False})
    refreshed = jwt.decode(result["refreshed"]["access_token"], options={"verify_signature": False})
    assert access["cnf"]["jkt"] and refreshed["cnf"] == access["cnf"], "both tokens bound to the client's key"
    assert result["refreshed"]["token_type"].lower() == "dpop"


def test_the_request_uri_from_the_outside_client_works_once(oauth4webapi, provider, user, agent):
    first, result, code = run_client(oauth4webapi, provider, agent, user)
    assert code == 0, result
    again = agent.go(first["authorization_url"])
    assert "code=" not in again.headers.get("Location", ""), "a used request_uri must not give a second code"
