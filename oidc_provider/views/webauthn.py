"""WebAuthn security keys, device biometrics and passkeys: registration and removal."""

from flask import Blueprint

bp = Blueprint("webauthn", __name__, url_prefix="/account/security/webauthn")
