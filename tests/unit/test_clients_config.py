"""clients.yaml: validation that names the file, client and field; live reload; secrets."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from oidc_provider.settings import ConfigError
from oidc_provider.settings.clients import (
    SECRET_HASH_PREFIX,
    ClientRegistry,
    generate_client_secret,
    hash_client_secret,
    parse_clients,
)

KEY = b"k" * 32
SECRET = "s3cret-" + "x" * 40
HASH = hash_client_secret(SECRET, KEY)


def web(**changes) -> dict:
    client = {"client_id": "web-app", "client_secret_hash": HASH,
              "redirect_uris": ["https://app.example.com/cb", "http://127.0.0.1:8080/cb"],
              "grant_types": ["authorization_code", "refresh_token"], "scopes": ["openid", "profile"]}
    client.update(changes)
    return {key: value for key, value in client.items() if value is not None}


def write(path, clients) -> None:
    path.write_text(json.dumps({"clients": clients}))  # JSON is YAML


def error_for(tmp_path, clients=None, text=None) -> str:
    path = tmp_path / "clients.yaml"
    if text is not None:
        path.write_text(text)
    else:
        write(path, clients)
    with pytest.raises(ConfigError) as caught:
        parse_clients(path, KEY)
    message = str(caught.value)
    assert str(path) in message, message
    return message


def assert_names(message: str, client: str, field: str) -> None:
    assert f"client '{client}'" in message, message
    assert f"field '{field}'" in message or re.search(rf"field '{re.escape(field)}[.'\d]", message), message


# -- valid files ------------------------------------------------------------------------

def test_valid_file_parses_every_client(tmp_path):
    path = tmp_path / "clients.yaml"
    path.write_text(f"""\
clients:
  - client_id: web-app
    client_secret_hash: "{HASH}"
    redirect_uris: ["https://app.example.com/cb"]
  - client_id: mobile
    token_endpoint_auth_method: none
    redirect_uris: ["com.example.app:/cb", "http://[::1]:8080/cb", "http://localhost/cb"]
  - client_id: backend
    client_secret_hash: "{HASH}"
    grant_types: [client_credentials]
  - client_id: jwt-app
    token_endpoint_auth_method: private_key_jwt
    jwks: {{keys: [{{kty: EC, crv: P-256, x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                     y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}]}}
    redirect_uris: ["https://jwt.example.com/cb"]
""")
    clients = parse_clients(path, KEY)
    assert sorted(clients) == ["backend", "jwt-app", "mobile", "web-app"]
    assert clients["mobile"].is_public and not clients["web-app"].is_public
    assert clients["web-app"].config.token_endpoint_auth_method == "client_secret_basic"  # the default
    assert clients["web-app"].check_grant_type("authorization_code")
    assert not clients["web-app"].check_grant_type("client_credentials")
    assert clients["backend"].check_grant_type("client_credentials")


def test_an_empty_list_is_valid(tmp_path):
    path = tmp_path / "clients.yaml"
    path.write_text("clients: []\n")
    assert parse_clients(path, KEY) == {}


# -- invalid files ----------------------------------------------------------------------

def test_missing_secret_hash_for_client_secret_basic(tmp_path):
    message = error_for(tmp_path, [web(client_secret_hash=None)])
    assert_names(message, "web-app", "client_secret_hash")
    assert "client_secret_basic" in message


def test_secret_hash_not_made_by_the_cli_is_refused(tmp_path):
    # a plain secret pasted where the hash belongs
    message = error_for(tmp_path, [web(client_secret_hash=SECRET)])
    assert_names(message, "web-app", "client_secret_hash")


def test_missing_secret_hash_for_client_secret_post(tmp_path):
    message = error_for(tmp_path, [web(client_secret_hash=None, token_endpoint_auth_method="client_secret_post")])
    assert_names(message, "web-app", "client_secret_hash")


def test_secret_hash_on_a_public_client_is_refused(tmp_path):
    message = error_for(tmp_path, [web(token_endpoint_auth_method="none")])
    assert_names(message, "web-app", "client_secret_hash")


def test_redirect_uri_with_a_fragment(tmp_path):
    message = error_for(tmp_path, [web(redirect_uris=["https://app.example.com/cb#frag"])])
    assert_names(message, "web-app", "redirect_uris")
    assert "https://app.example.com/cb#frag" in message


def test_relative_redirect_uri(tmp_path):
    message = error_for(tmp_path, [web(redirect_uris=["/callback"])])
    assert_names(message, "web-app", "redirect_uris")


@pytest.mark.parametrize("uri", ["http://app.example.com/cb", "http://10.0.0.5/cb", "http://localhost.evil.com/cb"])
def test_plain_http_to_a_non_loopback_host(tmp_path, uri):
    message = error_for(tmp_path, [web(redirect_uris=[uri])])
    assert_names(message, "web-app", "redirect_uris")
    assert "http" in message and "loopback" in message


def test_plain_http_post_logout_uri_to_a_non_loopback_host(tmp_path):
    message = error_for(tmp_path, [web(post_logout_redirect_uris=["http://app.example.com/bye"])])
    assert_names(message, "web-app", "post_logout_redirect_uris")


def test_private_key_jwt_without_jwks(tmp_path):
    message = error_for(tmp_path, [web(client_id="jwt-app", client_secret_hash=None,
                                       token_endpoint_auth_method="private_key_jwt")])
    assert_names(message, "jwt-app", "jwks")
    assert "private_key_jwt" in message


def test_private_key_jwt_with_an_empty_key_set(tmp_path):
    message = error_for(tmp_path, [web(client_id="jwt-app", client_secret_hash=None, jwks={"keys": []},
                                       token_endpoint_auth_method="private_key_jwt")])
    assert_names(message, "jwt-app", "jwks")


@pytest.mark.parametrize("field", [{"require_signed_request_object": True}, {"request_object_signing_alg": "ES256"}])
def test_signed_request_objects_without_jwks(tmp_path, field):
    message = error_for(tmp_path, [web(**field)])
    assert_names(message, "web-app", "jwks")
    assert "request objects" in message


def test_public_client_with_client_credentials(tmp_path):
    message = error_for(tmp_path, [web(client_id="spa", client_secret_hash=None, token_endpoint_auth_method="none",
                                       grant_types=["authorization_code", "client_credentials"])])
    assert_names(message, "spa", "grant_types")


def test_authorization_code_without_redirect_uris(tmp_path):
    message = error_for(tmp_path, [web(redirect_uris=[])])
    assert_names(message, "web-app", "redirect_uris")


def test_unknown_field(tmp_path):
    message = error_for(tmp_path, [web(), web(client_id="typo-app", redirect_uri="https://app.example.com/cb")])
    assert_names(message, "typo-app", "redirect_uri")


def test_unknown_grant_type(tmp_path):
    message = error_for(tmp_path, [web(grant_types=["authorization_code", "implicit"])])
    assert_names(message, "web-app", "grant_types")


def test_unknown_auth_method(tmp_path):
    message = error_for(tmp_path, [web(token_endpoint_auth_method="client_secret_jwt")])
    assert_names(message, "web-app", "token_endpoint_auth_method")


def test_bad_client_id(tmp_path):
    message = error_for(tmp_path, [web(client_id="a b")])
    assert_names(message, "a b", "client_id")


def test_client_without_id_is_named_by_position(tmp_path):
    message = error_for(tmp_path, [web(), web(client_id=None)])
    assert_names(message, "#2", "client_id")


def test_duplicate_client_id(tmp_path):
    message = error_for(tmp_path, [web(), web(client_name="Again")])
    assert_names(message, "web-app", "client_id")
    assert "twice" in message


def test_clients_not_a_list(tmp_path):
    message = error_for(tmp_path, text="clients:\n  client_id: web-app\n")
    assert "'clients'" in message and "list" in message


def test_a_client_that_is_not_a_mapping(tmp_path):
    message = error_for(tmp_path, text="clients:\n  - web-app\n")
    assert "client '#1'" in message, message


def test_top_level_not_a_mapping(tmp_path):
    error_for(tmp_path, text="- client_id: web-app\n")


def test_not_yaml(tmp_path):
    message = error_for(tmp_path, text="clients: [unclosed\n")
    assert "YAML" in message


def test_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        parse_clients(path, KEY)


# -- secrets ----------------------------------------------------------------------------

def test_check_client_secret(tmp_path):
    path = tmp_path / "clients.yaml"
    write(path, [web()])
    client = parse_clients(path, KEY)["web-app"]
    assert client.check_client_secret(SECRET) is True
    assert client.check_client_secret(SECRET + "x") is False
    assert client.check_client_secret(SECRET[:-1]) is False
    assert client.check_client_secret("") is False
    assert client.check_client_secret(HASH) is False  # the stored hash is not a password


def test_secret_hash_is_keyed_and_is_not_the_secret(tmp_path):
    secret = generate_client_secret()
    stored = hash_client_secret(secret, KEY)
    assert stored.startswith(SECRET_HASH_PREFIX)
    assert secret not in stored
    assert stored != hash_client_secret(secret, b"another key" * 3)  # a leaked file alone is not enough
    assert stored == hash_client_secret(secret, KEY)
    assert len(secret) >= 43 and generate_client_secret() != secret  # 256 random bits each


def test_the_same_file_with_another_key_accepts_no_secret(tmp_path):
    path = tmp_path / "clients.yaml"
    write(path, [web()])
    assert parse_clients(path, b"other-key" * 4)["web-app"].check_client_secret(SECRET) is False


def test_public_client_has_no_secret(tmp_path):
    path = tmp_path / "clients.yaml"
    write(path, [web(client_secret_hash=None, token_endpoint_auth_method="none")])
    client = parse_clients(path, KEY)["web-app"]
    assert client.check_client_secret("") is False
    assert client.check_client_secret(SECRET) is False


# -- redirect URIs ----------------------------------------------------------------------

@pytest.mark.parametrize("candidate", [
    "https://app.example.com/cb/",
    "https://app.example.com/cb?x=1",
    "https://app.example.com/CB",
    "https://APP.example.com/cb",
    "https://app.example.com:443/cb",
    "https://app.example.com/cb#",
    "https://app.example.com/c",
    "https://app.example.com/cb/../cb",
    "http://app.example.com/cb",
    "http://127.0.0.1:8081/cb",
    "http://localhost:8080/cb",
    "https://app.example.com/cb ",
    "",
])
def test_redirect_uri_matching_is_exact(tmp_path, candidate):
    path = tmp_path / "clients.yaml"
    write(path, [web()])
    client = parse_clients(path, KEY)["web-app"]
    assert client.check_redirect_uri("https://app.example.com/cb") is True
    assert client.check_redirect_uri("http://127.0.0.1:8080/cb") is True
    assert client.check_redirect_uri(candidate) is False


def test_default_redirect_uri_only_when_unambiguous(tmp_path):
    path = tmp_path / "clients.yaml"
    write(path, [web(), web(client_id="single", redirect_uris=["https://one.example.com/cb"])])
    clients = parse_clients(path, KEY)
    assert clients["web-app"].get_default_redirect_uri() is None
    assert clients["single"].get_default_redirect_uri() == "https://one.example.com/cb"


def test_post_logout_redirect_uri_matching_is_exact(tmp_path):
    path = tmp_path / "clients.yaml"
    write(path, [web(post_logout_redirect_uris=["https://app.example.com/bye"])])
    client = parse_clients(path, KEY)["web-app"]
    assert client.check_post_logout_redirect_uri("https://app.example.com/bye") is True
    assert client.check_post_logout_redirect_uri("https://app.example.com/bye/") is False
    assert client.check_post_logout_redirect_uri("https://app.example.com/cb") is False


def test_allowed_scope_is_the_intersection(tmp_path):
    path = tmp_path / "clients.yaml"
    write(path, [web()])
    client = parse_clients(path, KEY)["web-app"]
    assert client.get_allowed_scope("openid email profile admin") == "openid profile"
    assert client.get_allowed_scope("") == ""


# -- the registry: reload without restart -----------------------------------------------

def bump_mtime(path) -> None:
    """Make the change visible even on file systems with a coarse mtime."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


@pytest.fixture
def registry(tmp_path):
    path = tmp_path / "clients.yaml"
    write(path, [web()])
    found = ClientRegistry(path, KEY)
    found.CHECK_INTERVAL = 0  # look at the file on every call
    return found


def test_registry_serves_the_file(registry):
    assert registry.get("web-app").client_id == "web-app"
    assert registry.get("nobody") is None
    assert registry.get(None) is None
    assert registry.get(["web-app"]) is None
    assert [c.client_id for c in registry.all()] == ["web-app"]
    assert registry.last_error is None


def test_registry_picks_up_an_edit_without_restart(registry):
    write(registry.path, [web(), web(client_id="added", redirect_uris=["https://added.example.com/cb"])])
    bump_mtime(registry.path)
    assert registry.get("added") is not None
    assert registry.get("added").check_redirect_uri("https://added.example.com/cb")

    write(registry.path, [web(client_id="added", redirect_uris=["https://added.example.com/cb"])])
    bump_mtime(registry.path)
    assert registry.get("web-app") is None  # removed clients are gone at once
    assert [c.client_id for c in registry.all()] == ["added"]
    assert registry.last_error is None


def test_registry_picks_up_a_changed_secret(registry):
    new_secret = generate_client_secret()
    write(registry.path, [web(client_secret_hash=hash_client_secret(new_secret, KEY))])
    bump_mtime(registry.path)
    client = registry.get("web-app")
    assert client.check_client_secret(new_secret) is True
    assert client.check_client_secret(SECRET) is False


def test_registry_keeps_the_last_good_clients_on_a_bad_edit(registry):
    write(registry.path, [web(redirect_uris=["https://app.example.com/cb#fragment"]), web(client_id="added")])
    bump_mtime(registry.path)
    assert registry.get("web-app") is not None
    assert registry.get("web-app").check_redirect_uri("https://app.example.com/cb")
    assert registry.get("added") is None
    assert registry.last_error is not None
    assert str(registry.path) in registry.last_error
    assert "client 'web-app'" in registry.last_error and "redirect_uris" in registry.last_error

    registry.path.write_text("clients: [broken\n")
    bump_mtime(registry.path)
    assert registry.get("web-app") is not None
    assert "YAML" in registry.last_error

    write(registry.path, [web(), web(client_id="added")])  # fixed: served, error cleared
    bump_mtime(registry.path)
    assert registry.get("added") is not None
    assert registry.last_error is None


def test_registry_keeps_clients_when_the_file_is_deleted(registry):
    registry.path.unlink()
    assert registry.get("web-app") is not None
    assert registry.last_error is not None and str(registry.path) in registry.last_error


def test_registry_checks_the_file_at_most_once_a_second(tmp_path):
    path = tmp_path / "clients.yaml"
    write(path, [web()])
    registry = ClientRegistry(path, KEY)  # the class default: CHECK_INTERVAL = 1.0
    write(path, [web(), web(client_id="added")])
    bump_mtime(path)
    assert registry.get("added") is None  # not looked at yet: no stat() on every request
    time.sleep(registry.CHECK_INTERVAL + 0.1)
    assert registry.get("added") is not None


def test_a_bad_file_at_start_up_is_fatal(tmp_path):
    path = tmp_path / "clients.yaml"
    write(path, [web(client_secret_hash=None)])
    with pytest.raises(ConfigError, match="client_secret_hash"):
        ClientRegistry(path, KEY)


# -- back-channel logout and the device grant -------------------------------------------

def test_backchannel_logout_uri_is_an_http_url_without_a_fragment(tmp_path):
    for bad in ("http://rp.example.com/logout", "https://rp.example.com/logout#x", "ftp://rp.example.com/x"):
        assert_names(error_for(tmp_path, [web(backchannel_logout_uri=bad)]), "web-app", "backchannel_logout_uri")
    path = tmp_path / "clients.yaml"
    write(path, [web(backchannel_logout_uri="https://rp.example.com/logout?tenant=1",
                     backchannel_logout_session_required=True)])
    config = parse_clients(path, KEY)["web-app"].config
    assert config.backchannel_logout_uri == "https://rp.example.com/logout?tenant=1"
    assert config.backchannel_logout_session_required is True


def test_a_public_device_client_needs_no_redirect_uri(tmp_path):
    path = tmp_path / "clients.yaml"
    write(path, [{"client_id": "tv-app", "token_endpoint_auth_method": "none",
                  "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]}])
    client = parse_clients(path, KEY)["tv-app"]
    assert client.check_grant_type("urn:ietf:params:oauth:grant-type:device_code")
    assert_names(error_for(tmp_path, [web(grant_types=["urn:ietf:params:oauth:grant-type:unknown"])]),
                 "web-app", "grant_types")
