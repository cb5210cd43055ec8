"""Push approval's pieces: device keys, the enrollment URL, the settings, the webhook adapter
against a real HTTP server, and the factor's rules (single use under concurrency, expiry,
binding, denial, lockout) against the real databases."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from joserfc.jwk import ECKey, RSAKey

from oidc_provider.authn.factors import Verification
from oidc_provider.authn.factors.push import PushError, PushFactor, import_device_key
from oidc_provider.authn.otp import SendRefused
from oidc_provider.delivery import DeliveryError
from oidc_provider.device_cli import DeviceError, parse_enrollment, sign_answer
from oidc_provider.push_gateway import WebhookPushGateway, build_push_gateway, notify_devices
from oidc_provider.settings import ConfigError, load_settings
from tests.conftest import BACKENDS, start_provider

FACTORS = ["password", "email", "push"]


# -- device keys ----------------------------------------------------------------------------------

def test_a_public_p256_key_is_accepted_and_its_thumbprint_is_the_device_id():
    key = ECKey.generate_key("P-256")
    imported = import_device_key(key.as_dict(private=False))
    assert not imported.is_private and imported.thumbprint() == key.thumbprint()


@pytest.mark.parametrize("jwk, why", [
    (ECKey.generate_key("P-256").as_dict(private=True), "private key"),
    (ECKey.generate_key("P-384").as_dict(private=False), "P-256"),
    (RSAKey.generate_key(2048).as_dict(private=False), "P-256"),
    ({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}, "not a valid"),
    ({"kty": "EC", "crv": "P-256", "x": ECKey.generate_key("P-256").as_dict()["x"],
      "y": ECKey.generate_key("P-256").as_dict()["y"]}, "not a valid"),  # a point off the curve
    ("not a jwk", "P-256"),
])
def test_anything_but_a_public_p256_key_is_refused(jwk, why):
    with pytest.raises(PushError, match=why) as refused:
        import_device_key(jwk)
    assert refused.value.status == 400 and refused.value.error == "invalid_key"


# -- the enrollment URL -----------------------------------------------------------------------------

def test_the_enrollment_url_gives_the_provider_and_the_token():
    assert parse_enrollment("https://id.example.com/push/devices?token=abc") == ("https://id.example.com", "abc")
    assert parse_enrollment("https://example.com/idp/push/devices?token=t-1") == ("https://example.com/idp", "t-1")
    assert parse_enrollment("tok", provider="https://id.example.com/") == ("https://id.example.com", "tok")
    for bad in ("https://id.example.com/push/devices", "https://id.example.com/elsewhere?token=abc"):
        with pytest.raises(DeviceError, match="not an enrollment URL"):
            parse_enrollment(bad)
    with pytest.raises(DeviceError, match="--provider"):
        parse_enrollment("tok")


# -- settings ---------------------------------------------------------------------------------------

def test_push_settings_defaults_and_validation():
    settings = load_settings(None, {"factors": FACTORS}).push
    assert settings.challenge_lifetime == 120 and settings.gateway == "none"
    assert build_push_gateway(settings).name == "none"
    with pytest.raises(ConfigError, match="push.*webhook gateway needs url"):
        load_settings(None, {"push": {"gateway": "webhook"}})
    with pytest.raises(ConfigError, match="push.url"):
        load_settings(None, {"push": {"gateway": "webhook", "url": "ftp://gateway"}})
    with pytest.raises(ConfigError, match="push.challenge_lifetime"):
        load_settings(None, {"push": {"challenge_lifetime": 0}})
    assert "push" in load_settings(None).factors  # on by default; usable once a device is enrolled
    assert "push" not in load_settings(None, {"factors": ["password"]}).factors


# -- the webhook adapter, against a real HTTP server --------------------------------------------------

def webhook(gateway_server, path="/push", token="s3cret"):
    settings = load_settings(None, {"push": {"gateway": "webhook", "url": f"{gateway_server.url}{path}",
                                             "token": token, "timeout": 2}}).push
    return build_push_gateway(settings)


NOTIFICATION = {"device": "dev-1", "push_token": None, "challenge_id": "c-1", "client": "Web app",
                "ip": "192.0.2.1", "place": "DE", "expires_at": 1_900_000_000}


def test_the_webhook_posts_the_notification_with_its_bearer_token(gateway):
    sender = webhook(gateway)
    assert isinstance(sender, WebhookPushGateway)
    notify_devices(sender, [NOTIFICATION, {**NOTIFICATION, "device": "dev-2"}])
    assert [r.json() for r in gateway.received] == [NOTIFICATION, {**NOTIFICATION, "device": "dev-2"}]
    assert {r.headers.get("Authorization") for r in gateway.received} == {"Bearer s3cret"}
    assert {r.path for r in gateway.received} == {"/push"}


def test_a_webhook_that_refuses_or_cannot_be_reached_is_a_delivery_error(gateway):
    gateway.status = 503
    with pytest.raises(DeliveryError, match="HTTP 503"):
        webhook(gateway).notify(NOTIFICATION)
    with pytest.raises(DeliveryError, match="no device could be notified"):
        notify_devices(webhook(gateway), [NOTIFICATION])
    gateway.status, gateway.delay = 200, 3
    with pytest.raises(DeliveryError, match="no answer within 2s"):
        webhook(gateway).notify(NOTIFICATION)


# -- the factor's rules, against the real databases ----------------------------------------------------

@pytest.fixture(scope="module", params=list(BACKENDS))
def provider(request, tmp_path_factory):
    running, stop = start_provider(tmp_path_factory.mktemp("push-unit"), request.param, extra_settings={
        "factors": FACTORS, "push": {"per_user_limit": 3},
        "lockout": {"max_failures": 3},
    })
    yield running
    stop()


@pytest.fixture
def app_context(provider):
    with provider.app.app_context():
        yield


class Phone:
    """A device key enrolled through the factor's own enrollment."""

    def __init__(self, factor, user, name="phone"):
        self.key = ECKey.generate_key("P-256")
        token, _ = factor.new_enrollment(user)
        self.id = factor.enroll(token, name, self.key.as_dict(private=False)).lookup

    def sign(self, challenge, decision, nonce=None):
        return sign_answer(self.key, self.id, challenge["challenge"], nonce or challenge["_nonce"], decision)


def factor_of(provider):
    return provider.op.factors.get("push")


def new_user(provider):
    from oidc_provider.extensions import db
    from oidc_provider.models import User

    return db.session.get(User, provider.add_user(email_verified=True)["sub"])


def begin(factor, user, binding="interaction-1"):
    """A challenge as the sign-in page stores it (begin's result plus the user), with its nonce
    read from the device's listing."""
    from oidc_provider.authn.factors.push import CHALLENGE

    pending = {**factor.begin(user, {"binding": binding, "ip": "192.0.2.7"}), "user_id": user.id}
    pending["_nonce"] = factor.store.get(CHALLENGE.format(pending["challenge"]))["nonce"]
    return pending


def test_a_user_without_a_device_cannot_use_push(provider, app_context):
    factor, user = factor_of(provider), new_user(provider)
    assert not factor.available_for(user) and not factor.available_for(None)
    assert factor.begin(user, {"binding": "b", "ip": None}) == {"challenge": None}
    assert factor.poll({"challenge": None}, {"binding": "b"}) == Verification(False, "no push device")


def test_poll_waits_then_completes_once_on_approval(provider, app_context):
    factor, user = factor_of(provider), new_user(provider)
    phone = Phone(factor, user)
    pending = begin(factor, user)
    assert pending["client"] == "an application" and pending["ip"] == "192.0.2.7" and pending["devices"] == ["phone"]
    assert factor.poll(pending, {"binding": "interaction-1"}) is None
    assert factor.poll(pending, {"binding": "interaction-1"}) is None  # waiting has no side effect
    assert factor.answer(pending["challenge"], "approve", phone.sign(pending, "approve")) == "approve"
    assert factor.poll(pending, {"binding": "interaction-1"}) == Verification(True)
    assert factor.poll(pending, {"binding": "interaction-1"}) is None  # the answer was used up


def test_an_answer_never_completes_another_sign_in(provider, app_context):
    factor, user = factor_of(provider), new_user(provider)
    phone = Phone(factor, user)
    pending = begin(factor, user, binding="the-real-one")
    factor.answer(pending["challenge"], "approve", phone.sign(pending, "approve"))
    result = factor.poll(pending, {"binding": "another-interaction"})
    assert not result.ok and result.reason == "an answer for another sign-in"


def test_concurrent_answers_count_once(provider):
    """Twelve threads send the same valid approval at once: exactly one is accepted."""
    with provider.app.app_context():
        factor, user = factor_of(provider), new_user(provider)
        phone = Phone(factor, user)
        pending = begin(factor, user)
    signature = phone.sign(pending, "approve")
    outcomes, barrier = [], threading.Barrier(12)

    def answer():
        with provider.app.app_context():
            barrier.wait()
            try:
                outcomes.append(factor_of(provider).answer(pending["challenge"], "approve", signature))
            except PushError as refused:
                outcomes.append(refused.error)

    threads = [threading.Thread(target=answer) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["already_answered"] * 11 + ["approve"], outcomes


def test_a_denial_fails_and_counts_toward_the_lockout(provider, app_context):
    from oidc_provider.extensions import db

    factor, user = factor_of(provider), new_user(provider)
    phone = Phone(factor, user)
    for _ in range(3):
        pending = begin(factor, user)
        factor.answer(pending["challenge"], "deny", phone.sign(pending, "deny"))
        assert factor.poll(pending, {"binding": "interaction-1"}).reason in ("denied", "account locked")
    db.session.refresh(user)
    assert user.failed_attempts == 3 and user.locked_until  # three denials in a row lock the account
    with pytest.raises(SendRefused) as refused:  # and the per-user limit stops a fourth request
        begin(factor, user)
    assert refused.value.message_id == "push_rate_limited"


def test_answers_after_expiry_are_refused_and_poll_fails(provider, app_context):
    """The same store and database, challenges that live one second."""
    op = provider.op
    push = op.settings.push.model_copy(update={"challenge_lifetime": 1})
    factor = PushFactor(dataclasses.replace(op, settings=op.settings.model_copy(update={"push": push})))
    user = new_user(provider)
    phone = Phone(factor, user)
    pending = begin(factor, user)
    time.sleep(1.2)
    with pytest.raises(PushError) as late:
        factor.answer(pending["challenge"], "approve", phone.sign(pending, "approve"))
    assert late.value.status == 410
    assert factor.poll(pending, {"binding": "interaction-1"}) == Verification(False, "expired")


def test_a_signature_must_cover_this_challenge_its_nonce_and_the_decision(provider, app_context):
    factor, user = factor_of(provider), new_user(provider)
    phone = Phone(factor, user)
    pending = begin(factor, user)
    for signature, decision in [
        (phone.sign(pending, "approve", nonce="another-nonce"), "approve"),
        (phone.sign(pending, "deny"), "approve"),  # signed deny, posted as approve
        (sign_answer(phone.key, phone.id, "another-challenge", pending["_nonce"], "approve"), "approve"),
        (sign_answer(ECKey.generate_key("P-256"), phone.id, pending["challenge"], pending["_nonce"], "approve"),
         "approve"),  # the right device id, the wrong key
    ]:
        with pytest.raises(PushError) as refused:
            factor.answer(pending["challenge"], decision, signature)
        assert refused.value.error == "bad_signature"
    with pytest.raises(PushError) as refused:
        factor.answer(pending["challenge"], "maybe", phone.sign(pending, "approve"))
    assert refused.value.status == 400
    assert factor.answer(pending["challenge"], "approve", phone.sign(pending, "approve")) == "approve"


def test_an_enrollment_token_is_single_use_and_a_key_enrolls_once(provider, app_context):
    factor, user = factor_of(provider), new_user(provider)
    key = ECKey.generate_key("P-256").as_dict(private=False)
    token, _ = factor.new_enrollment(user)
    factor.enroll(token, "phone", key)
    with pytest.raises(PushError) as reused:
        factor.enroll(token, "again", ECKey.generate_key("P-256").as_dict(private=False))
    assert reused.value.error == "invalid_token"
    token, _ = factor.new_enrollment(new_user(provider))
    with pytest.raises(PushError) as twice:  # the same key for another account
        factor.enroll(token, "phone", key)
    assert twice.value.status == 409
    assert [device.name for device in factor.devices(user.id)] == ["phone"]
