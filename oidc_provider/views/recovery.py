"""Recovery codes: generate (shown once), regenerate, remove, see how many are left.

The pages need the browser's signed-in user (account.signed_in) and exist only when the
`recovery-code` factor is enabled. Codes are shown in the answer to the POST that made
them and never again: only their keyed hashes are stored (authn/factors/recovery_codes.py).
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from ..models import record_audit
from .account import user_and_factor

bp = Blueprint("recovery", __name__, url_prefix="/account/security/recovery-codes")


@bp.get("")
def show():
    user, factor, failure = user_and_factor("recovery-code")
    if failure:
        return failure
    left = factor.remaining(user)
    return render_template("recovery_status.html", remaining=left, low=left > 0 and factor.is_low(left),
                           removed=request.args.get("done") == "removed")


@bp.post("/generate")
def generate():
    """A new set; the old codes stop working at once."""
    user, factor, failure = user_and_factor("recovery-code")
    if failure:
        return failure
    replaced = factor.remaining(user)
    codes = factor.generate(user)
    record_audit("recovery_codes.generated", user_id=user.id, ip=request.remote_addr, count=len(codes),
                 replaced=replaced)
    return render_template("recovery_codes_new.html", codes=codes, replaced=replaced)


@bp.post("/remove")
def remove():
    user, factor, failure = user_and_factor("recovery-code")
    if failure:
        return failure
    if factor.remove(user):
        record_audit("recovery_codes.removed", user_id=user.id, ip=request.remote_addr)
    return redirect(url_for("recovery.show", done="removed"), code=303)
