"""Recovery codes: generate (shown once), regenerate, see how many are left."""

from flask import Blueprint

bp = Blueprint("recovery", __name__, url_prefix="/account/security/recovery-codes")
