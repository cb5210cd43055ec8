"""Development-only pages (dev_mode): a callback that shows what a client would receive."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

bp = Blueprint("dev", __name__, url_prefix="/dev")


@bp.get("/callback")
def callback():
    """The demo clients' redirect_uri: shows the code and how to exchange it."""
    issuer = current_app.extensions["op"].settings.issuer_url
    return render_template("dev_callback.html", params=request.args.to_dict(), issuer=issuer,
                           redirect_uri=f"{issuer}/dev/callback")
