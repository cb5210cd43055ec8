"""Recovery codes: generate (shown once), regenerate, remove, see how many are left.

The pages need the browser's signed-in user (account.signed_in) and exist only when the
`recovery-code` factor is enabled. Codes are shown in the answer to the POST that made
them and never again: only their keyed hashes are stored (authn/factors/recovery_codes.py).
Generating and removing need a fresh sign-in (account.sensitive) and are mailed to the user.
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from .account import changed, sensitive, user_and_factor

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
@sensitive(back="recovery.show")
def generate():
    """A new set; the old codes stop working at once."""
    user, factor, failure = user_and_factor("recovery-code")
    if failure:
        return failure
    replaced = factor.remaining(user)
    codes = factor.generate(user)
    changed(user, "recovery_codes.generated", count=len(codes), replaced=replaced)
    return render_template("recovery_codes_new.html", codes=codes, replaced=replaced)


@bp.post("/remove")
@sensitive(back="recovery.show")
def remove():
    user, factor, failure = user_and_factor("recovery-code")
    if failure:
        return failure
    removed = factor.remove(user)
    if removed:
        changed(user, "recovery_codes.removed", count=removed)
    return redirect(url_for("recovery.show", done="removed"), code=303)
