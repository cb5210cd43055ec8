"""An outside relying-party library (requests-oauthlib + PyJWT, not ours) against a live
provider: code flow with PKCE, ID token validated against JWKS, userinfo, refresh,
revocation and logout."""

import jwt
import requests
from requests_oauthlib import OAuth2Session

from tests.conftest import REDIRECT, UserAgent, callback_params


def test_code_flow_with_pkce_userinfo_refresh_revoke_logout(provider, user):
    config = provider.discovery()
    assert config["issuer"] == provider.url
    rp = OAuth2Session("web", redirect_uri=REDIRECT, scope=["openid", "profile", "email"], pkce="S256")
    url, state = rp.authorization_url(config["authorization_endpoint"], nonce="n-0S6_WzA2Mj")

    browser = UserAgent(provider)
    page = browser.go(url)
    assert page.status_code == 200 and "Sign in" in page.text
    redirect = browser.login(page, user["username"])
    callback_url = redirect.headers["Location"]
    assert callback_params(redirect)["state"] == state
    assert callback_params(redirect)["iss"] == provider.url  # RFC 9207

    token = rp.fetch_token(config["token_endpoint"], authorization_response=callback_url,
                           client_secret=provider.secrets["web"])
    assert token["token_type"].lower() == "bearer"

    signing_key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(token["id_token"])
    claims = jwt.decode(token["id_token"], signing_key.key, algorithms=["RS256"], audience="web",
                        issuer=provider.url)
    assert claims["sub"] == user["sub"]
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["amr"] == ["pwd"]
    assert claims.get("acr") != "mfa"
    for name in ("iat", "exp", "auth_time", "sid", "at_hash"):
        assert name in claims

    info = rp.get(config["userinfo_endpoint"]).json()
    assert info == {"sub": user["sub"], "preferred_username": user["username"], "name": "Ada Lovelace",
                    "email": f"{user['username']}@example.com", "email_verified": True}

    refreshed = rp.refresh_token(config["token_endpoint"], auth=("web", provider.secrets["web"]))
    assert refreshed["refresh_token"] != token["refresh_token"]
    new_claims = jwt.decode(refreshed["id_token"], signing_key.key, algorithms=["RS256"], audience="web",
                            issuer=provider.url)
    assert new_claims["auth_time"] == claims["auth_time"] and new_claims["amr"] == claims["amr"]
    assert "nonce" not in new_claims

    revoked = requests.post(config["revocation_endpoint"], data={"token": refreshed["refresh_token"]},
                            auth=("web", provider.secrets["web"]), timeout=10)
    assert revoked.status_code == 200
    assert rp.get(config["userinfo_endpoint"]).status_code == 401  # revoked with its refresh token

    bye = browser.go(f"{config['end_session_endpoint']}?id_token_hint={token['id_token']}"
                     f"&post_logout_redirect_uri=http://127.0.0.1:9/bye&state=s1")
    assert bye.status_code == 302 and bye.headers["Location"] == "http://127.0.0.1:9/bye?state=s1"
    again = browser.authorize(client_id="web", prompt="none", state="x")
    assert callback_params(again)["error"] == "login_required"
