"""Push approval: device enrollment, the device API (pending challenges, approve/deny), account page."""

from flask import Blueprint

bp = Blueprint("push", __name__, url_prefix="/push")
