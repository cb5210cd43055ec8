"""The `upstreams:` settings and what is checked before any upstream is contacted."""

from __future__ import annotations

import pytest

from oidc_provider.authn.acr import parse_acr_request
from oidc_provider.authn.upstream import build_upstreams
from oidc_provider.settings import ConfigError, load_settings


def settings(**upstreams):
    return load_settings(None, {"upstreams": upstreams})


def test_the_google_preset_fills_discovery_scopes_and_name():
    google = settings(google={"preset": "google", "client_id": "id", "client_secret": "s"}).upstreams["google"]
    assert google.discovery_url == "https://accounts.google.com/.well-known/openid-configuration"
    assert google.scopes == ["openid", "email", "profile"] and google.display_name == "Google"
    mine = settings(google={"preset": "google", "client_id": "id", "client_secret": "s", "display_name": "G",
                            "scopes": ["openid"]}).upstreams["google"]
    assert mine.display_name == "G" and mine.scopes == ["openid"]


@pytest.mark.parametrize("upstreams, field", [
    ({"bad name": {"issuer": "https://idp.example", "client_id": "x", "client_secret": "s"}}, "upstreams.bad name"),
    ({"corp": {"client_id": "x", "client_secret": "s"}}, "upstreams.corp"),
    ({"corp": {"issuer": "idp.example", "client_id": "x", "client_secret": "s"}}, "upstreams.corp.issuer"),
    ({"corp": {"issuer": "https://idp.example", "client_id": "x", "token_endpoint_auth_method": "none"}},
     "upstreams.corp.token_endpoint_auth_method"),
    ({"corp": {"issuer": "https://idp.example", "client_id": "x", "claims": {"phone": "tel"}}},
     "upstreams.corp.claims"),
])
def test_invalid_upstreams_are_refused_naming_the_key(upstreams, field):
    with pytest.raises(ConfigError, match=f"field '{field}"):
        settings(**upstreams)


def test_a_client_secret_is_required_and_may_come_from_the_environment(monkeypatch):
    configured = settings(**{"corp-sso": {"issuer": "https://idp.example", "client_id": "x"}})
    with pytest.raises(ConfigError, match="upstreams.corp-sso.client_secret.*UPSTREAM_CORP_SSO_CLIENT_SECRET"):
        build_upstreams(configured)
    monkeypatch.setenv("UPSTREAM_CORP_SSO_CLIENT_SECRET", "from-env")
    upstream = build_upstreams(configured)["corp-sso"]
    assert upstream.client_secret == "from-env"
    assert upstream.discovery_url == "https://idp.example/.well-known/openid-configuration"
    hidden = settings(corp={"issuer": "https://idp.example", "client_id": "x", "client_secret": "very-secret"})
    assert "very-secret" not in repr(hidden)


def test_a_configured_name_is_what_the_direct_acr_value_names():
    configured = settings(**{"corp.sso": {"issuer": "https://idp.example", "client_id": "x", "client_secret": "s"}})
    asked = parse_acr_request("mfa urn:acme:corp.sso_direct", None, None, [])
    assert asked.upstream in configured.upstreams
