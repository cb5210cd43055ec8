"""Sign-in through upstream OpenID providers (social login, `urn:<ns>:<idp>_direct`)."""

from flask import Blueprint

bp = Blueprint("federation", __name__)
