"""Push approval (`push`): an enrolled device approves or denies the sign-in with its key.

A device enrolls once by scanning a QR code from the account page: it registers an
ES256 (P-256) public key with a single-use enrollment token; its id is the key's RFC 7638
thumbprint. A sign-in then creates a challenge in the ephemeral store: random id and
nonce, the user, the interaction it is bound to, the client's name, the browser's IP and
approximate place, and an expiry. The devices are notified (push_gateway.py), fetch the
challenge with a request signed by their key, and answer with a JWS over
{challenge, nonce, decision}. The browser's page polls; `poll` reads the store once and
never waits.

The rules, enforced here rather than in the views:
- only a device of the challenge's user may answer (any of that user's enrolled devices,
  since a person may answer on whichever phone is at hand; a device of another user never);
- the signature must verify with that device's enrolled key and cover the challenge id,
  its nonce and the decision, so an answer cannot be moved to another challenge or flipped;
- an answer is single use: its marker is added to the store atomically (add-if-absent), so
  of two answers (a replay, or two devices at once) exactly one counts;
- after `challenge_lifetime` answers are refused and the waiting page fails;
- the answer only ever completes the interaction the challenge was made for (binding);
- a denial fails the step and counts as a failed attempt for the account lockout.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

from joserfc import jws
from joserfc.jwk import ECKey

from ...i18n import lazy_gettext as _l
from ...extensions import db
from ...models import Authenticator, User, confirmed_authenticators, record_audit
from ...push_gateway import build_push_gateway, notify_devices
from ..lockout import verify_counted
from ..otp import SendRefused
from . import Verification

ALGORITHM = "ES256"  # devices sign with P-256 keys (RFC 7518 3.4)
REQUEST_TYPE = "push-request+jwt"  # typ of a device's signed request
ANSWER_TYPE = "push-answer+jws"  # typ of a device's signed answer
REQUEST_SKEW = 60  # seconds a signed request's iat may be off; its jti is remembered twice as long
GRACE = 60  # seconds an expired challenge is kept, so a late answer is told "expired"
RECENT_CHALLENGES = 10  # how many of a user's latest challenges a device's listing looks at
SEQUENCE_LIFETIME = 30 * 24 * 3600
MAX_TOKEN = 4096  # longest signed request or answer accepted, in characters
MAX_NAME = 64

CHALLENGE = "push-challenge:{}"
ANSWER = "push-answer:{}"
ANSWERED = "push-answered:{}"
SEQUENCE = "push-seq:{}"  # per user: a counter numbering the user's challenges...
SLOT = "push-slot:{}:{}"  # ... and challenge number -> id, so a device can list them
ENROLLMENT = "push-enroll:{}"
REQUEST_JTI = "push-jti:{}:{}"
SENT = "push-sent:{}"


class PushError(Exception):
    """A device's request refused: `status`, `error` and `description` make the JSON answer."""

    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def import_device_key(jwk) -> ECKey:
    """A device's public key: an EC P-256 JWK without private parts, the point on the curve."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise PushError(400, "invalid_key", "public_key must be an EC P-256 JWK.")
    if "d" in jwk:
        raise PushError(400, "invalid_key", "public_key holds a private key; send only the public part.")
    try:
        key = ECKey.import_key({"kty": "EC", "crv": "P-256", "x": jwk.get("x"), "y": jwk.get("y")})
    except Exception:  # noqa: BLE001 - bad base64, a point off the curve...: all one answer
        raise PushError(400, "invalid_key", "public_key is not a valid EC P-256 public key.") from None
    return key


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _unverified_header(token: str) -> dict:
    """The JOSE header before verification, only to find the key (kid) that must verify it."""
    try:
        return dict(jws.extract_compact(token.encode()).headers())
    except Exception:  # noqa: BLE001 - malformed JWS
        return {}


def _verified_payload(token: str, key: ECKey) -> dict | None:
    """The JSON payload of a compact JWS signed by `key` with ES256, or None."""
    try:
        payload = jws.deserialize_compact(token, key, algorithms=[ALGORITHM]).payload
        value = json.loads(payload)
    except Exception:  # noqa: BLE001 - bad signature, wrong algorithm, not JSON
        return None
    return value if isinstance(value, dict) else None


def _same(a, b) -> bool:
    return isinstance(a, str) and isinstance(b, str) and hmac.compare_digest(a.encode(), b.encode())


class PushFactor:
    id = "push"
    amr = "push"
    flow = "push-device"  # a device the user holds: its own flow, distinct from email and phone
    kind = "push"  # the page waits and polls; nothing is typed in
    response_field = "answer"
    max_response = 0
    failure_message = "push_failed"
    usernameless = False
    first_factor = False  # a second factor: the device approves a login someone started
    label = _l("Approve on my phone")

    def __init__(self, op):
        self.op = op
        self.store = op.store
        self.settings = op.settings.push
        self.gateway = build_push_gateway(self.settings)

    # -- devices ---------------------------------------------------------------------------

    def devices(self, user_id: str) -> list[Authenticator]:
        return confirmed_authenticators(user_id, self.id)

    def device(self, device_id) -> Authenticator | None:
        if not isinstance(device_id, str) or not 0 < len(device_id) <= 128:
            return None
        query = db.select(Authenticator).filter_by(kind=self.id, lookup=device_id, confirmed=True)
        return db.session.execute(query).scalars().first()

    def remove(self, user, device_id: str) -> bool:
        device = self.device(device_id)
        if device is None or device.user_id != user.id:
            return False
        db.session.delete(device)
        db.session.commit()
        record_audit("push.device_removed", user_id=user.id, device=device_id, name=device.name)
        return True

    # -- enrollment ------------------------------------------------------------------------

    def new_enrollment(self, user) -> tuple[str, float]:
        """A single-use enrollment token for this user (kept hashed), and when it expires."""
        token = secrets.token_urlsafe(32)
        lifetime = self.settings.enrollment_lifetime
        self.store.set(ENROLLMENT.format(_digest(token)), {"user_id": user.id}, lifetime)
        return token, time.time() + lifetime

    def enroll(self, token, name, public_key, push_token=None, ip=None) -> Authenticator:
        """Register a device's public key for the user the token was made for."""
        key = import_device_key(public_key)
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or not name.isprintable():
            raise PushError(400, "invalid_request", f"name must be 1 to {MAX_NAME} printable characters.")
        if push_token is not None and (not isinstance(push_token, str) or len(push_token) > MAX_TOKEN):
            raise PushError(400, "invalid_request", "push_token must be a string.")
        if not isinstance(token, str) or not 0 < len(token) <= 256:
            raise PushError(400, "invalid_request", "token is missing.")
        claimed = self.store.take(ENROLLMENT.format(_digest(token)))  # single use, even if what follows fails
        user = db.session.get(User, claimed["user_id"]) if claimed else None
        if user is None or user.disabled:
            raise PushError(400, "invalid_token", "The enrollment code is unknown, expired or was already used.")
        device_id = key.thumbprint()  # RFC 7638: one id per key, so a key enrolls only once
        if self.device(device_id) is not None:
            raise PushError(409, "already_enrolled", "This key is already enrolled; generate a new one.")
        device = Authenticator(user_id=user.id, kind=self.id, name=name.strip(), lookup=device_id,
                               data={"jwk": key.as_dict(private=False), "push_token": push_token},
                               confirmed=True, created_at=time.time())
        db.session.add(device)
        db.session.commit()
        record_audit("push.device_enrolled", user_id=user.id, ip=ip, device=device_id, name=device.name)
        return device

    # -- the device's requests ---------------------------------------------------------------

    def authenticate_request(self, device_id: str, authorization: str | None, method: str,
                             url: str) -> Authenticator:
        """The device behind `Authorization: Device <jwt>`: a JWT signed by its key, typ
        push-request+jwt, kid = device id, claims htm/htu (this method and URL, as in DPoP,
        RFC 9449 4.2), iat within a minute of now, and a jti never seen before."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        refused = PushError(401, "invalid_request_signature",
                            "The request is not signed by an enrolled device.")
        if scheme != "Device" or not 0 < len(token) <= MAX_TOKEN:
            raise refused
        header = _unverified_header(token)
        if (header.get("typ"), header.get("alg"), header.get("kid")) != (REQUEST_TYPE, ALGORITHM, device_id):
            raise refused
        device = self.device(device_id)
        claims = _verified_payload(token, ECKey.import_key(device.data["jwk"])) if device else None
        if claims is None:
            raise refused
        iat, jti = claims.get("iat"), claims.get("jti")
        if (claims.get("htm") != method or claims.get("htu") != url
                or not isinstance(iat, (int, float)) or abs(time.time() - iat) > REQUEST_SKEW
                or not isinstance(jti, str) or not 16 <= len(jti) <= 128):
            raise refused
        if not self.store.add(REQUEST_JTI.format(device_id, _digest(jti)), 1, 2 * REQUEST_SKEW):
            raise refused  # a replayed request
        return device

    def pending_for(self, device: Authenticator) -> list[dict]:
        """The user's challenges still waiting for an answer, newest first."""
        now = time.time()
        latest = int(self.store.get(SEQUENCE.format(device.user_id)) or 0)
        found = []
        for number in range(latest, max(latest - RECENT_CHALLENGES, 0), -1):
            challenge_id = self.store.get(SLOT.format(device.user_id, number))
            challenge = self.store.get(CHALLENGE.format(challenge_id)) if challenge_id else None
            if challenge and challenge["user_id"] == device.user_id and challenge["expires_at"] > now:
                found.append({key: challenge[key] for key in
                              ("id", "nonce", "client", "ip", "place", "created_at", "expires_at")})
        return found

    def answer(self, challenge_id: str, decision, signature, ip=None) -> str:
        """Record a device's signed decision on a challenge; returns the decision."""
        if decision not in ("approve", "deny"):
            raise PushError(400, "invalid_request", 'decision must be "approve" or "deny".')
        if not isinstance(signature, str) or not 0 < len(signature) <= MAX_TOKEN:
            raise PushError(400, "invalid_request", "signature is missing.")
        header = _unverified_header(signature)
        if header.get("alg") != ALGORITHM or header.get("typ") != ANSWER_TYPE:
            raise PushError(400, "invalid_request", "signature must be a compact ES256 JWS, typ push-answer+jws.")
        device = self.device(header.get("kid"))
        if device is None:
            raise PushError(403, "unknown_device", "The signing device is not enrolled.")
        if not 0 < len(challenge_id) <= 64:
            raise PushError(404, "unknown_challenge", "There is no such sign-in request.")
        key = CHALLENGE.format(challenge_id)
        challenge = self.store.get(key)
        if challenge is None:
            if self.store.get(ANSWERED.format(challenge_id)):
                raise PushError(409, "already_answered", "This sign-in request was already answered.")
            raise PushError(404, "unknown_challenge", "There is no such sign-in request.")
        if time.time() >= challenge["expires_at"]:
            raise PushError(410, "expired", "This sign-in request has expired.")
        if device.user_id != challenge["user_id"]:
            self._refused(device, challenge, "a device of another user")
            raise PushError(403, "wrong_device", "This device cannot answer this sign-in request.")
        signed = _verified_payload(signature, ECKey.import_key(device.data["jwk"]))
        if (signed is None or not _same(signed.get("challenge"), challenge["id"])
                or not _same(signed.get("nonce"), challenge["nonce"]) or signed.get("decision") != decision):
            self._refused(device, challenge, "bad signature")
            raise PushError(403, "bad_signature", "The signature does not cover this request and decision.")
        now = time.time()
        keep = max(challenge["expires_at"] - now, 0) + GRACE
        if not self.store.add(ANSWERED.format(challenge_id), decision, keep):  # atomic: of two answers, one
            raise PushError(409, "already_answered", "This sign-in request was already answered.")
        self.store.delete(key)  # off the devices' lists; the marker above answers any later attempt
        self.store.set(ANSWER.format(challenge_id), {
            "challenge": challenge["id"], "decision": decision, "device": device.lookup,
            "user_id": challenge["user_id"], "binding": challenge["binding"], "at": now,
        }, keep)
        device.last_used_at = now
        db.session.commit()
        record_audit("push.answered", user_id=device.user_id, ip=ip, device=device.lookup, decision=decision,
                     client=challenge["client"], login_ip=challenge["ip"])
        return decision

    @staticmethod
    def _refused(device, challenge, reason) -> None:
        record_audit("push.answer_refused", user_id=device.user_id, device=device.lookup, reason=reason,
                     challenge_user=challenge["user_id"])

    # -- the Factor protocol -----------------------------------------------------------------

    def available_for(self, user) -> bool:
        return bool(user and not user.disabled and self.devices(user.id))

    def begin(self, user, context) -> dict:
        """Make a challenge for the user's devices and notify them (a DeliveryError when none
        could be reached; SendRefused past the per-user limit)."""
        devices = self.devices(user.id) if user is not None and not user.disabled else []
        if not devices:
            return {"challenge": None}
        settings = self.settings
        if self.store.incr(SENT.format(user.id), settings.rate_window) > settings.per_user_limit:
            raise SendRefused("push_rate_limited", retry_after=settings.rate_window)
        now = time.time()
        ip = context.get("ip")
        challenge = {
            # hex: an id pasted into `oidc-provider device approve ID` never starts with "-" (an option)
            "id": secrets.token_hex(24), "nonce": secrets.token_urlsafe(24), "user_id": user.id,
            "binding": context["binding"], "devices": [device.lookup for device in devices],
            "client": self._client_name(context), "ip": ip, "place": self._place(ip),
            "created_at": now, "expires_at": now + settings.challenge_lifetime,
        }
        key = CHALLENGE.format(challenge["id"])
        self.store.set(key, challenge, settings.challenge_lifetime + GRACE)
        number = self.store.incr(SEQUENCE.format(user.id), SEQUENCE_LIFETIME)
        self.store.set(SLOT.format(user.id, number), challenge["id"], settings.challenge_lifetime + GRACE)
        try:
            notify_devices(self.gateway, [{
                "device": device.lookup, "push_token": (device.data or {}).get("push_token"),
                "challenge_id": challenge["id"], "client": challenge["client"], "ip": ip,
                "place": challenge["place"], "expires_at": int(challenge["expires_at"]),
            } for device in devices])
        except Exception:
            self.store.delete(key)  # nobody was told: the challenge must not linger
            raise
        return {"challenge": challenge["id"], "expires_at": challenge["expires_at"],
                "client": challenge["client"], "ip": ip, "place": challenge["place"],
                "devices": [device.name for device in devices]}

    def poll(self, pending: dict, context: dict) -> Verification | None:
        """None while no answer came; never waits. An answer is taken (used once) and checked
        under the account lockout, so a denial counts as a failed attempt."""
        challenge_id = pending.get("challenge")
        if not challenge_id:
            return Verification(False, "no push device")
        answer = self.store.take(ANSWER.format(challenge_id))
        if answer is None:
            if time.time() >= pending.get("expires_at", 0):
                return Verification(False, "expired")
            return None
        user = db.session.get(User, pending["user_id"]) if pending.get("user_id") else None
        context = {**context, "pending": pending}
        return verify_counted(self.op, self, user, {self.response_field: answer}, context)

    def verify(self, user, response, context) -> Verification:
        """Check an answer `poll` took from the store (a device's verified decision), never a
        value posted by a browser: push is not one of the kinds answered on /verify."""
        answer, pending = response.get(self.response_field) or {}, context.get("pending") or {}
        if user is None or user.disabled:
            return Verification(False, "no account")
        if answer.get("challenge") != pending.get("challenge") or answer.get("user_id") != user.id:
            return Verification(False, "an answer to another challenge")
        if answer.get("binding") != context.get("binding"):
            return Verification(False, "an answer for another sign-in")
        if answer.get("at", float("inf")) > pending.get("expires_at", 0):
            return Verification(False, "answered too late")
        if answer.get("decision") != "approve":
            return Verification(False, "denied")
        return Verification(True)

    # -- what the person is shown ------------------------------------------------------------

    @staticmethod
    def seconds_left(pending: dict) -> int:
        """For the waiting page."""
        return max(0, int(pending.get("expires_at", 0) - time.time()))

    def _client_name(self, context) -> str:
        record = self.store.get(f"interaction:{context['binding']}") or {}
        client = self.op.clients.get(record.get("client_id")) if record.get("client_id") else None
        if client is None:
            return context.get("client_name") or "an application"
        return client.config.client_name or client.client_id

    def _place(self, ip) -> str | None:
        """Country and coordinates to a tenth of a degree (about 10 km): enough to notice a
        login from elsewhere, no more."""
        from ..signin import geoip

        country, latitude, longitude = geoip(self.op).lookup(ip)
        if latitude is not None and longitude is not None:
            near = f"near {latitude:.1f}, {longitude:.1f}"
            return f"{country}, {near}" if country else near
        return country
