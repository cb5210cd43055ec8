"""Push approval end to end: a real provider, the reference device (the real `oidc-provider
device` command in a subprocess, or its Python functions), a real webhook receiver.

A person enrolls a device from the account page's QR code URL, signs in with a password,
chooses "Approve on my phone"; the gateway is told; the device lists the request and
approves; the waiting page (which only reloads) continues to the client with a code.
Then the attacks: a signature by another user's device, a replayed answer, an answer
after expiry, a denial, a used enrollment token.
"""

from __future__ import annotations

import html
import json
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests

from oidc_provider.device_cli import Device, DeviceError, request_proof, sign_answer
from tests.conftest import post, BACKENDS, REDIRECT, UserAgent, callback_params, start_provider, token_request

SCRIPT = Path(sys.executable).with_name("oidc-provider")
FACTORS = ["password", "email-otp", "sms", "voice", "email", "push"]
PUSH_TOKEN = "push-gateway-secret"


def push_settings(gateway_server, **push) -> dict:
    return {"factors": FACTORS, "push": {"gateway": "webhook", "url": f"{gateway_server.url}/push",
                                         "token": PUSH_TOKEN, **push}}


@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory, gateway_server):
    running, stop = start_provider(tmp_path_factory.mktemp("push"), request.param,
                                   extra_settings=push_settings(gateway_server))
    yield running
    stop()


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory, gateway_server):
    """Challenges that expire after two seconds."""
    running, stop = start_provider(tmp_path_factory.mktemp("push-short"), "sqlite-sql",
                                   extra_settings=push_settings(gateway_server, challenge_lifetime=2))
    yield running
    stop()


# -- helpers ----------------------------------------------------------------------------------

def enrollment_url(provider, person) -> str:
    """Sign in to the account and read the enrollment URL the QR code holds."""
    agent = UserAgent(provider)
    agent.sign_in(person["username"], client_id="web")
    page = agent.go(f"{provider.url}/push/enroll")
    assert page.status_code == 200 and "<svg" in page.text, page.text[:300]
    return html.unescape(re.search(r'<code id="push-enroll-url">([^<]+)</code>', page.text).group(1))


def enrolled_device(provider, person, name="phone") -> Device:
    return Device.enroll(enrollment_url(provider, person), name)


def start_push(provider, person):
    """Password, then "Approve on my phone": the browser and its waiting page."""
    agent = UserAgent(provider)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa"), person["username"])
    assert "One more step" in choice.text and 'name="factor" value="push"' in choice.text, choice.text[:500]
    waiting = post(agent, choice, "start", {"factor": "push"})
    assert waiting.status_code == 200 and "Approve on your phone" in waiting.text, waiting.text[:500]
    assert '<meta http-equiv="refresh" content="2">' in waiting.text
    return agent, waiting


def only_pending(device) -> dict:
    pending = device.pending()
    assert len(pending) == 1, pending
    return pending[0]


def id_token_claims(provider, redirect) -> dict:
    params = callback_params(redirect)
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": params["code"],
                                      "redirect_uri": REDIRECT}).json()
    return jwt.decode(tokens["id_token"], options={"verify_signature": False})


def answer_raw(provider, challenge_id, body) -> requests.Response:
    return requests.post(f"{provider.url}/push/challenges/{challenge_id}", json=body, timeout=10)


def device_cli(tmp_path, *args, ok=True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(SCRIPT), "device", *args], cwd=tmp_path, text=True, capture_output=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    if ok:
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def person(provider):
    return provider.add_user(email_verified=True)


# -- the journey --------------------------------------------------------------------------------

def test_enroll_with_the_cli_then_approve_a_sign_in(provider, person, gateway, tmp_path):
    state = tmp_path / "device.json"
    enrolled = device_cli(tmp_path, "enroll", enrollment_url(provider, person), "--name", "Ada's laptop",
                          "--state", str(state))
    assert "enrolled \"Ada's laptop\"" in enrolled.stdout
    assert stat.S_IMODE(state.stat().st_mode) == 0o600 and '"d"' in state.read_text()  # the private key

    account = UserAgent(provider)
    account.sign_in(person["username"], client_id="web")
    listing = account.go(f"{provider.url}/push/devices")
    assert listing.status_code == 200 and "Ada&#39;s laptop" in listing.text

    agent, waiting = start_push(provider, person)
    assert "Ada&#39;s laptop" in waiting.text and "Web app" in waiting.text
    [notice] = [r for r in gateway.received if r.path == "/push"]
    sent = notice.json()
    assert notice.headers.get("Authorization") == f"Bearer {PUSH_TOKEN}"
    assert set(sent) >= {"device", "challenge_id", "client", "ip", "place", "expires_at"}
    assert sent["client"] == "Web app" and sent["ip"] == "127.0.0.1" and "nonce" not in sent
    assert sent["device"] == json.loads(state.read_text())["device_id"]

    pending = device_cli(tmp_path, "pending", "--state", str(state)).stdout
    assert sent["challenge_id"] in pending and "Web app" in pending and "127.0.0.1" in pending
    still = agent.go(waiting.url)
    assert still.status_code == 200 and "Approve on your phone" in still.text  # no answer yet: no code

    device_cli(tmp_path, "approve", sent["challenge_id"], "--state", str(state))
    claims = id_token_claims(provider, agent.go(waiting.url))
    assert claims["amr"] == ["pwd", "push", "mfa"] and claims["acr"] == "mfa"
    assert claims["sub"] == person["sub"]
    assert "no sign-in is waiting" in device_cli(tmp_path, "pending", "--state", str(state)).stdout
    used = UserAgent(provider)
    used.sign_in(person["username"], client_id="web")
    assert "never" not in re.search(r"<tbody>.*</tbody>", used.go(f"{provider.url}/push/devices").text, re.S).group(0)


def test_push_is_offered_only_to_users_with_a_device(provider):
    person = provider.add_user(email_verified=True, phone=f"+1555{time.time_ns() % 10**7:07d}", phone_verified=True)
    agent = UserAgent(provider)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa"), person["username"])
    assert "One more step" in choice.text and 'value="push"' not in choice.text
    forced = post(agent, choice, "start", {"factor": "push"})
    assert forced.status_code == 400 and "cannot be used for this step" in forced.text


def test_a_removed_device_can_no_longer_answer(provider, person):
    device = enrolled_device(provider, person)
    account, waiting = start_push(provider, person)  # removing a factor needs a fresh MFA sign-in
    challenge = only_pending(device)
    device.answer(challenge["id"], "approve", challenge["nonce"])
    assert "code" in callback_params(account.go(waiting.url))
    page = account.go(f"{provider.url}/push/devices")
    remove_link = re.search(r'href="(/account/security/factors/[0-9]+/remove)"', page.text).group(1)
    confirm = account.go(f"{provider.url}{remove_link}")
    assert 'data-verdict="last_second_factor"' in confirm.text  # warned: the password alone is left
    removed = account.submit(confirm, {})
    assert removed.status_code == 200 and "was removed" in removed.text and device.device_id not in removed.text
    with pytest.raises(DeviceError, match="401"):
        device.pending()


def test_the_account_pages_need_a_signed_in_user(provider):
    for path in ("/push/devices", "/push/enroll"):
        assert requests.get(f"{provider.url}{path}", timeout=10).status_code == 401


# -- attacks ----------------------------------------------------------------------------------

def test_an_approval_signed_by_another_users_device_is_refused(provider, person):
    device = enrolled_device(provider, person)
    mallory = provider.add_user(email_verified=True)
    other = enrolled_device(provider, mallory, "mallory's phone")
    agent, waiting = start_push(provider, person)
    challenge = only_pending(device)
    assert other.pending() == []  # another user's device never sees it
    # Mallory's key, under her own device id: not a device of this user
    signed = sign_answer(other.key, other.device_id, challenge["id"], challenge["nonce"], "approve")
    refused = answer_raw(provider, challenge["id"], {"decision": "approve", "signature": signed})
    assert refused.status_code == 403 and refused.json()["error"] == "wrong_device"
    # Mallory's key claiming to be the victim's device: the signature does not verify
    forged = sign_answer(other.key, device.device_id, challenge["id"], challenge["nonce"], "approve")
    refused = answer_raw(provider, challenge["id"], {"decision": "approve", "signature": forged})
    assert refused.status_code == 403 and refused.json()["error"] == "bad_signature"
    assert "Approve on your phone" in agent.go(waiting.url).text  # still waiting, no code
    # the refused answers did not use the challenge up: the right device still can
    device.answer(challenge["id"], "approve", challenge["nonce"])
    assert "code" in callback_params(agent.go(waiting.url))


def test_a_replayed_approval_is_refused(provider, person):
    device = enrolled_device(provider, person)
    agent, waiting = start_push(provider, person)
    challenge = only_pending(device)
    body = {"decision": "approve",
            "signature": sign_answer(device.key, device.device_id, challenge["id"], challenge["nonce"], "approve")}
    assert answer_raw(provider, challenge["id"], body).status_code == 200
    assert "code" in callback_params(agent.go(waiting.url))
    replayed = answer_raw(provider, challenge["id"], body)
    assert replayed.status_code == 409 and replayed.json()["error"] == "already_answered"
    # nor does it answer the next sign-in's challenge: the signature covers the id and the nonce
    second_agent, second_waiting = start_push(provider, person)
    second = only_pending(device)
    moved = answer_raw(provider, second["id"], body)
    assert moved.status_code == 403 and moved.json()["error"] == "bad_signature"
    flipped = {"decision": "approve",
               "signature": sign_answer(device.key, device.device_id, second["id"], second["nonce"], "deny")}
    assert answer_raw(provider, second["id"], flipped).json()["error"] == "bad_signature"
    assert "Approve on your phone" in second_agent.go(second_waiting.url).text


def test_an_approval_completes_only_the_sign_in_it_was_made_for(provider, person):
    device = enrolled_device(provider, person)
    first_agent, first_waiting = start_push(provider, person)
    first = only_pending(device)
    second_agent, second_waiting = start_push(provider, person)
    device.answer(first["id"], "approve", first["nonce"])
    assert "Approve on your phone" in second_agent.go(second_waiting.url).text
    assert "code" in callback_params(first_agent.go(first_waiting.url))


def test_an_approval_after_expiry_is_refused(short_lived, tmp_path):
    person = short_lived.add_user(email_verified=True)
    device = enrolled_device(short_lived, person)
    agent, waiting = start_push(short_lived, person)
    challenge = only_pending(device)
    time.sleep(2.5)
    assert device.pending() == []
    late = answer_raw(short_lived, challenge["id"], {"decision": "approve", "signature": sign_answer(
        device.key, device.device_id, challenge["id"], challenge["nonce"], "approve")})
    assert late.status_code == 410 and late.json()["error"] == "expired"
    page = agent.go(waiting.url)
    assert page.status_code == 401 and "no answer came in time" in page.text
    assert "One more step" in page.text and "Location" not in page.headers


def test_a_denied_push_never_signs_in(provider, person, tmp_path):
    state = tmp_path / "device.json"
    device_cli(tmp_path, "enroll", enrollment_url(provider, person), "--name", "phone", "--state", str(state))
    agent, waiting = start_push(provider, person)
    challenge_id = re.search(r"^(\S+)\s", device_cli(tmp_path, "pending", "--state", str(state)).stdout).group(1)
    assert "denied" in device_cli(tmp_path, "deny", challenge_id, "--state", str(state)).stdout
    page = agent.go(waiting.url)
    assert page.status_code == 401 and "was not approved on your device" in page.text
    assert "One more step" in page.text  # back to the choice; no code was issued
    again = agent.go(waiting.url)
    assert again.status_code == 200 and "Location" not in again.headers and "One more step" in again.text
    late = device_cli(tmp_path, "approve", challenge_id, "--state", str(state), ok=False)
    assert late.returncode != 0  # an answer, once given, is final
    device = Device.load(state)
    assert device.pending() == []


def test_an_enrollment_token_works_once(provider, person):
    url = enrollment_url(provider, person)
    Device.enroll(url, "first")
    with pytest.raises(DeviceError, match="invalid_token"):
        Device.enroll(url, "second")


def test_a_signed_device_request_cannot_be_replayed_or_borrowed(provider, person):
    device = enrolled_device(provider, person)
    url = f"{provider.url}/push/devices/{device.device_id}/challenges"
    proof = request_proof(device.key, device.device_id, "GET", url)
    headers = {"Authorization": f"Device {proof}"}
    assert requests.get(url, headers=headers, timeout=10).status_code == 200
    assert requests.get(url, headers=headers, timeout=10).status_code == 401  # same jti
    mallory = enrolled_device(provider, provider.add_user(email_verified=True), "mallory")
    borrowed = request_proof(mallory.key, device.device_id, "GET", url)  # her key, his device id
    assert requests.get(url, headers={"Authorization": f"Device {borrowed}"}, timeout=10).status_code == 401
    elsewhere = request_proof(device.key, device.device_id, "GET", f"{provider.url}/push/devices/x/challenges")
    assert requests.get(url, headers={"Authorization": f"Device {elsewhere}"}, timeout=10).status_code == 401
    assert requests.get(url, timeout=10).status_code == 401


def test_a_gateway_that_fails_is_reported_and_nothing_waits(provider, person, gateway):
    device = enrolled_device(provider, person)
    gateway.status = 500
    agent = UserAgent(provider)
    choice = agent.login(agent.authorize(client_id="web", acr_values="mfa"), person["username"])
    page = post(agent, choice, "start", {"factor": "push"})
    assert page.status_code == 503 and "could not send" in page.text
    assert device.pending() == []
