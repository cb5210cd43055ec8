"""TOTP authenticator apps: enrollment (QR code) and removal."""

from flask import Blueprint

bp = Blueprint("totp", __name__, url_prefix="/account/security/totp")
