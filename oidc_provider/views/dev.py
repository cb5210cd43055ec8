"""Development-only pages (dev_mode): the demo clients' callback and the message outbox."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, render_template, request

from ..models import recent_outbox

bp = Blueprint("dev", __name__, url_prefix="/dev")


@bp.get("/callback")
def callback():
    """The demo clients' redirect_uri: shows the code and how to exchange it."""
    issuer = current_app.extensions["op"].settings.issuer_url
    return render_template("dev_callback.html", params=request.args.to_dict(), issuer=issuer,
                           redirect_uri=f"{issuer}/dev/callback")


@bp.get("/outbox")
def outbox():
    """What the provider sent in dev_mode, so a developer signs in without a mail server."""
    to = request.args.get("to", "").strip()
    limit = min(max(request.args.get("limit", 50, type=int), 1), 500)
    rows = [{"message": message,
             "iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(message.at)),
             "shown": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(message.at))}
            for message in recent_outbox(limit, to or None)]
    return render_template("dev_outbox.html", messages=rows, to=to)
