"""The `oidc-provider` command: run, database, users, clients, keys, demo, dev outbox."""

from __future__ import annotations

import getpass
import os
import secrets
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import click

from . import BASE_DIR, create_app, resolve_path
from .settings import ConfigError, load_settings


def _config_path() -> Path | None:
    path = Path(os.environ.get("OIDC_PROVIDER_CONFIG") or BASE_DIR / "config" / "provider.yaml")
    return path if path.exists() else None


def _settings():
    try:
        return load_settings(_config_path())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _app():
    """The app of a command; messages the command queued (notices) are sent before it exits."""
    from .oauth.keys import KeysNotReady

    try:
        app = create_app(_config_path())
    except (ConfigError, KeysNotReady) as exc:
        raise click.ClickException(str(exc)) from None
    command = click.get_current_context(silent=True)
    if command is not None:
        command.call_on_close(lambda: _send_messages(app))
    return app


def _finish(queue, settings, timeout: float, unfinished: str) -> None:
    """Wait for the background work a command queued: its tries, timeouts and backoff are bounded."""
    if not queue.drain(settings.attempts * timeout + settings.backoff * 2 ** settings.attempts + 5):
        click.echo(unfinished, err=True)


def _send_messages(app) -> None:
    op = app.extensions["op"]
    timeout = max(op.settings.email.timeout, op.settings.sms.timeout, op.settings.voice.timeout)
    _finish(op.delivery.queue, op.settings.delivery, timeout, "some messages are still unsent; see the log")


@click.group()
def main():
    """OpenID Connect provider with multi-factor authentication."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def run(host, port):
    """Serve the provider (development server)."""
    app = _app()
    app.run(host=host, port=port, threaded=True, use_reloader=False)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", type=click.IntRange(1, 64), help="worker processes  [default: one per CPU]")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64), help="threads per worker")
@click.option("--hash-slots", type=click.IntRange(1, 256),
              help="argon2id hashes each worker computes at once  [default: the CPUs shared among the workers]")
@click.option("--pin-workers/--no-pin-workers", default=True, show_default=True,
              help="confine each worker to its share of the CPUs")
def serve(host, port, workers, threads, hash_slots, pin_workers):
    """Serve in production shape: Granian, several workers, settings from provider.yaml and env."""
    from .oauth.keys import KeysNotReady
    from .serve import serve as run_server

    try:
        run_server(host, port, workers, threads, hash_slots, pin_workers)
    except (ConfigError, KeysNotReady) as exc:
        raise click.ClickException(str(exc)) from None


# -- database ---------------------------------------------------------------------------

@main.group()
def db():
    """Database schema."""


def upgrade_database(app, revision: str = "head") -> None:
    from alembic import command
    from alembic.config import Config

    from .extensions import db as sqla

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with app.app_context(), sqla.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@db.command("upgrade")
def db_upgrade():
    """Create or migrate the schema to the latest version."""
    upgrade_database(_app())
    click.echo("database is up to date")


# -- users ------------------------------------------------------------------------------

@main.group()
def users():
    """Manage user accounts."""


def _read_password(prompt: str) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(prompt)
    if getpass.getpass("Repeat: ") != first:
        raise click.ClickException("the passwords differ")
    return first


def create_user(username, password, email=None, phone=None, name=None, email_verified=False,
                phone_verified=False, groups=None, attributes=None):
    from .authn.factors.password import hash_password
    from .extensions import db as sqla
    from .models import User, record_audit

    user = User(
        username=username, email=email.lower() if email else None, name=name, phone_number=phone,
        email_verified=email_verified, phone_number_verified=phone_verified,
        password_hash=hash_password(password) if password else None, groups=list(groups or []),
        attributes=dict(attributes or {}),
    )
    sqla.session.add(user)
    sqla.session.commit()
    record_audit("user.created", user_id=user.id, actor="cli")
    return user


@users.command("add")
@click.argument("username")
@click.option("--email")
@click.option("--phone", help="E.164, e.g. +14155550100")
@click.option("--name")
@click.option("--email-verified", is_flag=True, help="mark the email address as verified")
@click.option("--phone-verified", is_flag=True, help="mark the phone number as verified")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
def users_add(username, email, phone, name, email_verified, phone_verified, password_stdin):
    """Create a user; asks for the password (or reads it from stdin)."""
    from .extensions import db as sqla
    from .models import User

    app = _app()
    password = sys.stdin.readline().rstrip("\n") if password_stdin else _read_password("Password: ")
    if len(password) < 8:
        raise click.ClickException("the password must have at least 8 characters")
    with app.app_context():
        taken = sqla.session.execute(sqla.select(User).filter_by(username=username)).scalar_one_or_none()
        if taken:
            raise click.ClickException(f"user {username!r} exists")
        user = create_user(username, password, email, phone, name, email_verified, phone_verified)
        click.echo(f"created {user.username} (sub {user.id})")


@users.command("list")
def users_list():
    """List users."""
    from .extensions import db as sqla
    from .models import User

    app = _app()
    with app.app_context():
        rows = sqla.session.execute(sqla.select(User).order_by(User.username)).scalars()
        click.echo(f"{'USERNAME':20} {'EMAIL':30} {'PHONE':16} SUB")
        for user in rows:
            email = (user.email or "-") + (" ✓" if user.email_verified else "")
            phone = (user.phone_number or "-") + (" ✓" if user.phone_number_verified else "")
            click.echo(f"{user.username:20} {email:30} {phone:16} {user.id}")


@users.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True)
def users_set_password(username, password_stdin):
    """Set a user's password."""
    from .authn.factors.password import hash_password
    from .extensions import db as sqla
    from .models import User, record_audit

    app = _app()
    password = sys.stdin.readline().rstrip("\n") if password_stdin else _read_password("New password: ")
    if len(password) < 8:
        raise click.ClickException("the password must have at least 8 characters")
    with app.app_context():
        user = sqla.session.execute(sqla.select(User).filter_by(username=username)).scalar_one_or_none()
        if user is None:
            raise click.ClickException(f"no user {username!r}")
        user.password_hash = hash_password(password)
        sqla.session.commit()
        record_audit("user.password_set", user_id=user.id, actor="cli")
        click.echo(f"password of {username} changed")


@users.command("verify")
@click.argument("username")
@click.option("--email", "email", is_flag=True, help="mark the email address as verified")
@click.option("--phone", "phone", is_flag=True, help="mark the phone number as verified")
def users_verify(username, email, phone):
    """Mark a user's email address and/or phone number as verified (checked by other means)."""
    from .extensions import db as sqla
    from .models import User, record_audit

    if not (email or phone):
        raise click.ClickException("say which: --email, --phone or both")
    app = _app()
    with app.app_context():
        user = sqla.session.execute(sqla.select(User).filter_by(username=username)).scalar_one_or_none()
        if user is None:
            raise click.ClickException(f"no user {username!r}")
        if email and not user.email or phone and not user.phone_number:
            raise click.ClickException(f"{username} has no {'email address' if email else 'phone number'}")
        user.email_verified = user.email_verified or email
        user.phone_number_verified = user.phone_number_verified or phone
        sqla.session.commit()
        record_audit("contact.verified", user_id=user.id, actor="cli", email=email, phone=phone)
        click.echo(f"{username}: email {'verified' if user.email_verified else 'unverified'}, "
                   f"phone {'verified' if user.phone_number_verified else 'unverified'}")


def _user_or_fail(username):
    from .extensions import db as sqla
    from .models import User

    user = sqla.session.execute(sqla.select(User).filter_by(username=username)).scalar_one_or_none()
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    return user


# -- administration (oidc_provider/admin.py; the admin API calls the same functions) -----------

@contextmanager
def _admin():
    """(op, admin service) inside an app context; refusals become messages, not tracebacks."""
    from sqlalchemy.exc import DatabaseError

    from . import admin

    app = _app()
    with app.app_context():
        try:
            yield app.extensions["op"], admin
        except admin.AdminError as exc:
            raise click.ClickException(exc.description) from None
        except DatabaseError:
            raise click.ClickException("the database is not ready: run 'oidc-provider db upgrade'") from None


REASON_OPTION = click.option("--reason", metavar="TEXT", help="why (kept in the audit log)")


def _echo_user(user: dict) -> None:
    lockout = user["lockout"]
    if not lockout["locked"]:
        locked = "no"
    elif lockout["locked_until"] == "9999-12-31T23:59:59Z":
        locked = "yes, until unlocked"
    else:
        locked = f"yes, until {lockout['locked_until']}"
    login = user["last_login"]
    rows = [
        ("user", f"{user['username']} (sub {user['id']})"),
        ("name", user["name"] or "-"),
        ("email", f"{user['email'] or '-'}{' (verified)' if user['email_verified'] else ''}"),
        ("phone", f"{user['phone_number'] or '-'}{' (verified)' if user['phone_number_verified'] else ''}"),
        ("disabled", "yes" if user["disabled"] else "no"),
        ("locked", locked),
        ("failures", f"{lockout['failed_attempts']} in a row (locks at {lockout['max_failures']})"),
        ("mfa policy", user["mfa_policy"] or "default (the client's, else the global policy)"),
        ("enrollment", "required at the next sign-in" if user["mfa_enrollment_required"] else "not required"),
        ("last login", f"{login['at']} from {login['ip'] or '-'}" if login else "-"),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':12}{value}")


@users.command("show")
@click.argument("username")
def users_show(username):
    """A user's account: lockout state (failed attempts, locked until), MFA policy, enrollment."""
    with _admin() as (op, admin):
        _echo_user(admin.summary(op, admin.user_by_name(username)))


@users.command("factors")
@click.argument("username")
def users_factors(username):
    """What can authenticate the user, with the ids `users reset-factor` takes."""
    with _admin() as (op, admin):
        found = admin.factors(op, admin.user_by_name(username))
        if not found:
            click.echo(f"{username} has no factors")
            return
        click.echo(f"{'ID':22} {'ADDED':21} {'LAST USED':21} FACTOR")
        for factor in found:
            entry = factor.to_dict()
            note = "" if entry["resettable"] else "   (not reset here)"
            click.echo(f"{entry['id']:22} {entry['created_at'] or '-':21} {entry['last_used_at'] or '-':21} "
                       f"{entry['label']}{note}")


@users.command("reset-factor")
@click.argument("username")
@click.argument("factor_id", required=False, metavar="ID")
@click.option("--all", "everything", is_flag=True,
              help="every authenticator, recovery codes, the phone and trusted browsers "
                   "(keeps the password, the email address and linked accounts)")
@REASON_OPTION
def users_reset_factor(username, factor_id, everything, reason):
    """Remove a factor (an ID from `users factors`) or --all; the user is told by email."""
    if bool(factor_id) == everything:
        raise click.ClickException("name one factor ID (see 'oidc-provider users factors NAME') or use --all")
    with _admin() as (op, admin):
        user = admin.user_by_name(username)
        if everything:
            done = admin.reset_all(op, user, admin.CLI, reason)
        else:
            done = admin.reset_factor(op, user, factor_id, admin.CLI, reason)
        for entry in done["removed"]:
            click.echo(f"removed {entry['id']}: {entry['label']}")
        if not done["removed"]:
            click.echo(f"{username} had nothing to reset")
        elif done["notified"]:
            click.echo(f"{username} was told by email")
        else:
            click.echo(f"{username} was not told: no verified email address, or the message failed")


@users.command("lock")
@click.argument("username")
@click.option("--minutes", type=click.IntRange(min=1), metavar="N", help="lock for N minutes; default: until unlocked")
@REASON_OPTION
def users_lock(username, minutes, reason):
    """Lock an account: every sign-in fails until it ends or `users unlock`."""
    with _admin() as (op, admin):
        _echo_user(admin.lock(op, admin.user_by_name(username), minutes, admin.CLI, reason))


@users.command("unlock")
@click.argument("username")
@REASON_OPTION
def users_unlock(username, reason):
    """End a lockout (after repeated failed attempts, or an admin's lock)."""
    with _admin() as (op, admin):
        admin.unlock(op, admin.user_by_name(username), admin.CLI, reason)
        click.echo(f"{username} unlocked")


@users.command("require-enrollment")
@click.argument("username")
@click.option("--off", is_flag=True, help="stop requiring it")
@REASON_OPTION
def users_require_enrollment(username, off, reason):
    """Make the user enroll a factor at their next sign-in."""
    with _admin() as (op, admin):
        admin.require_enrollment(op, admin.user_by_name(username), not off, admin.CLI, reason)
        click.echo(f"{username}: enrollment {'not required' if off else 'required at the next sign-in'}")


@users.command("policy")
@click.argument("username")
@click.argument("policy", type=click.Choice(["never", "adaptive", "always", "default"]))
@REASON_OPTION
def users_policy(username, policy, reason):
    """Set a user's own MFA policy; default: the client's, else the global policy."""
    with _admin() as (op, admin):
        admin.set_mfa_policy(op, admin.user_by_name(username), None if policy == "default" else policy,
                             admin.CLI, reason)
        click.echo(f"{username}: mfa policy {policy}")


@main.group()
def devices():
    """Browsers users signed in from; trusted ("remembered") ones and their revocation."""


@devices.command("list")
@click.argument("username")
def devices_list(username):
    """A user's devices, newest first."""
    import time

    app = _app()
    with app.app_context():
        user = _user_or_fail(username)
        rows = app.extensions["op"].devices.list(user.id)
        click.echo(f"{'ID':6} {'LAST SEEN':17} {'LAST IP':16} {'TRUSTED UNTIL':17} USER AGENT")
        for row in rows:
            seen = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row.last_seen))
            until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row.trusted_until)) if row.trusted else "-"
            click.echo(f"{row.id:<6} {seen:17} {row.last_ip or '-':16} {until:17} {row.user_agent or '-'}")


@devices.command("revoke")
@click.argument("username")
@click.argument("device_id", type=int, required=False)
@click.option("--all", "all_devices", is_flag=True, help="every device of the user")
def devices_revoke(username, device_id, all_devices):
    """Stop trusting a device (or all): the next sign-in from it counts as a new device."""
    from .models import record_audit

    if not (device_id or all_devices):
        raise click.ClickException("name a device id or use --all")
    app = _app()
    with app.app_context():
        user = _user_or_fail(username)
        service = app.extensions["op"].devices
        chosen = [d for d in service.list(user.id) if all_devices or d.id == device_id]
        if not chosen:
            raise click.ClickException(f"{username} has no device {device_id}")
        for row in chosen:
            service.revoke(row)
            record_audit("device.revoked", user_id=user.id, actor="cli", device=row.id)
        click.echo(f"revoked {len(chosen)} device(s) of {username}")


# -- sessions ---------------------------------------------------------------------------

@main.group()
def sessions():
    """IdP sessions: end them (clients get back-channel logout tokens), sweep expired ones."""


def _deliver_logouts(app) -> None:
    """Wait for the logout tokens this command queued."""
    from .oauth.backchannel import outbox

    settings = app.extensions["op"].settings.backchannel_logout
    _finish(outbox(app), settings, settings.timeout, "some logout tokens are still undelivered; see the audit log")


@sessions.command("end")
@click.argument("username")
@click.option("--sid", help="only this session (the sid of its ID tokens)")
def sessions_end(username, sid):
    """Sign a user out everywhere (or of one session)."""
    from .oauth.backchannel import end_session, logout_user

    app = _app()
    with app.app_context():
        user = _user_or_fail(username)
        op = app.extensions["op"]
        if sid:
            session = op.sessions.by_sid(sid)
            if session is None or session.sub != user.id:
                raise click.ClickException(f"{username} has no session {sid!r}")
            ended = int(end_session(op, sid, "admin"))
        else:
            ended = logout_user(op, user.id, "admin")
        _deliver_logouts(app)
        click.echo(f"ended {ended} session(s) of {username}")


@sessions.command("sweep")
def sessions_sweep():
    """End expired sessions and notify their clients (run it from cron if sweep_interval is 0)."""
    from .oauth.backchannel import sweep

    app = _app()
    with app.app_context():
        ended = sweep(app.extensions["op"])
        _deliver_logouts(app)
        click.echo(f"{ended} expired session(s) ended")


# -- clients ----------------------------------------------------------------------------

@main.group()
def clients():
    """Relying parties in config/clients.yaml."""


def _client_secret_key() -> bytes:
    from .oauth.keys import KeysNotReady, MasterSecret

    settings = _settings()
    try:
        return MasterSecret.load(resolve_path(BASE_DIR, settings.keys_dir)).derive("client-secret")
    except KeysNotReady as exc:
        raise click.ClickException(str(exc)) from None


@clients.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
def clients_check(path):
    """Validate the clients file; names the file, client and field of a problem."""
    from .settings.clients import parse_clients

    path = path or resolve_path(BASE_DIR, _settings().clients_file)
    try:
        found = parse_clients(path, _client_secret_key())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{path}: {len(found)} clients, all valid")


@clients.command("secret")
@click.argument("client_id")
def clients_secret(client_id):
    """Generate a client secret; prints it once and the hash to put in clients.yaml."""
    from .settings.clients import generate_client_secret, hash_client_secret

    secret = generate_client_secret()
    click.echo(f"client_id:          {client_id}")
    click.echo(f"client_secret:      {secret}   (give this to the client; it is not stored)")
    click.echo(f"client_secret_hash: {hash_client_secret(secret, _client_secret_key())}")


# -- keys -------------------------------------------------------------------------------

@main.group()
def keys():
    """Signing keys and the master secret in keys/."""


def _key_folder():
    from .oauth.keys import KeyFolder

    return KeyFolder(resolve_path(BASE_DIR, _settings().keys_dir))


ALG_OPTION = click.option("--alg", type=click.Choice(["RS256", "ES256"]), multiple=True,
                          help="limit to this algorithm (repeatable); default: all")


@keys.command("generate")
@ALG_OPTION
def keys_generate(alg):
    """Create the master secret and an active and a next key per algorithm, where missing."""
    from .oauth.keys import ALGORITHMS

    made = _key_folder().generate(tuple(alg) or ALGORITHMS)
    for entry in made:
        click.echo(f"generated {entry['kid']} ({entry['alg']}, {entry['state']})")
    if not made:
        click.echo("keys already present")


@keys.command("rotate")
@ALG_OPTION
@click.option("--now", is_flag=True,
              help="promote a next key published for less than the JWKS cache time (a compromised key)")
def keys_rotate(alg, now):
    """Promote the next key, retire the active one (published until its tokens expire)."""
    from .oauth.keys import ALGORITHMS, JWKS_CACHE_SECONDS, SIGNING_GRACE, KeyRing, KeysNotReady

    settings = _settings()
    retire_after = settings.max_token_lifetime(_client_lifetimes(settings)) + SIGNING_GRACE
    published_for = 0 if now else JWKS_CACHE_SECONDS + KeyRing.CHECK_INTERVAL
    try:
        entries = _key_folder().rotate(tuple(alg) or ALGORITHMS, retire_after, published_for)
    except KeysNotReady as exc:
        raise click.ClickException(str(exc)) from None
    for entry in entries:
        click.echo(f"{entry['kid']:32} {entry['alg']:6} {entry['state']}")


@keys.command("reencrypt")
def keys_reencrypt():
    """Re-encrypt stored secrets (TOTP seeds) with the first of `encryption_key_ids`.

    Rotation: put a new id first in provider.yaml, restart, run this, then drop the old id."""
    from .authn.factors.totp import seed_context
    from .extensions import db as sqla
    from .models import Authenticator

    app = _app()
    box = app.extensions["op"].secret_box
    moved = 0
    with app.app_context():
        rows = sqla.session.execute(sqla.select(Authenticator).filter(
            Authenticator.kind == "totp", Authenticator.secret.is_not(None))).scalars()
        for row in rows:
            if box.needs_reencrypt(row.secret):
                context = seed_context(row.user_id)
                row.secret = box.encrypt(box.decrypt(row.secret, context), context)
                moved += 1
        sqla.session.commit()
    click.echo(f"{moved} secret(s) now under key {box.current_id}")


def _client_lifetimes(settings) -> list[int]:
    from .settings.clients import parse_clients

    try:
        found = parse_clients(resolve_path(BASE_DIR, settings.clients_file), b"")
    except ConfigError:
        return []
    return [c.config.access_token_lifetime for c in found.values() if c.config.access_token_lifetime]


@keys.command("list")
def keys_list():
    """Show the keys, their state and until when retired keys stay published."""
    import time

    entries = _key_folder().entries()
    if not entries:
        raise click.ClickException("no keys: run 'oidc-provider keys generate'")
    click.echo(f"{'KID':32} {'ALG':6} {'STATE':8} PUBLISHED UNTIL")
    for entry in entries:
        until = entry.get("published_until")
        shown = time.strftime("%Y-%m-%d %H:%M", time.gmtime(until)) if until else "-"
        click.echo(f"{entry['kid']:32} {entry['alg']:6} {entry['state']:8} {shown}")


# -- demo -------------------------------------------------------------------------------

DEMO_CLIENTS = """\
# Relying parties. Edit freely: the provider reloads this file without a restart and
# keeps the last good version if an edit does not validate ('oidc-provider clients check').
# Secrets are stored as keyed hashes: make one with 'oidc-provider clients secret ID'.
clients:
  # A confidential web application (server side, client_secret_basic).
  - client_id: demo-web
    client_name: Demo web app
    token_endpoint_auth_method: client_secret_basic
    client_secret_hash: "{secret_hash}"
    redirect_uris: ["{issuer}/dev/callback"]
    post_logout_redirect_uris: ["{issuer}/dev/callback"]
    grant_types: [authorization_code, refresh_token, client_credentials]
    scopes: [openid, profile, email, phone, offline_access]
    first_party: true

  # A public mobile or single-page app: no secret, PKCE (S256) required.
  - client_id: demo-mobile
    client_name: Demo mobile app
    token_endpoint_auth_method: none
    redirect_uris: ["{issuer}/dev/callback", "com.example.demo:/callback"]
    post_logout_redirect_uris: ["{issuer}/dev/callback"]
    grant_types: [authorization_code, refresh_token]
    scopes: [openid, profile, email, offline_access]
    first_party: false
"""
DEMO_SECRET_FILE = "demo-client-secret"  # in keys/: git-ignored, mode 0600


@main.command()
def demo():
    """Prepare the embedded default: keys, database, demo clients and user; print how to sign in."""
    import base64
    import hashlib

    from .extensions import db as sqla
    from .models import User
    from .oauth.keys import _write_private
    from .settings.clients import generate_client_secret, hash_client_secret

    settings = _settings()
    folder = _key_folder()
    folder.generate()
    clients_file = resolve_path(BASE_DIR, settings.clients_file)
    secret_file = folder.path / DEMO_SECRET_FILE
    if not clients_file.exists():
        secret = generate_client_secret()
        clients_file.parent.mkdir(parents=True, exist_ok=True)
        clients_file.write_text(DEMO_CLIENTS.format(
            secret_hash=hash_client_secret(secret, _client_secret_key()), issuer=settings.issuer_url))
        _write_private(secret_file, secret.encode())
    secret = secret_file.read_text().strip() if secret_file.exists() else "(set by you: see config/clients.yaml)"
    app = _app()
    upgrade_database(app)
    with app.app_context():
        demo_user = sqla.session.execute(sqla.select(User).filter_by(username="demo")).scalar_one_or_none()
        if demo_user is None:
            create_user("demo", "demo-password", email="demo@example.com", phone="+15550100",
                        name="Demo User", email_verified=True, phone_verified=True)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    issuer = settings.issuer_url
    callback = quote(f"{issuer}/dev/callback", safe="")
    click.echo(f"""
Provider:     {issuer}   (discovery: {issuer}/.well-known/openid-configuration)
Demo user:    demo / demo-password
Web client:   demo-web / {secret}
Mobile app:   demo-mobile (public, PKCE)

Sign in as the web client:
  {issuer}/oidc/auth?client_id=demo-web&response_type=code&scope=openid%20profile%20email&redirect_uri={callback}&state=demo&nonce=n-{secrets.token_hex(4)}

Sign in as the mobile app (code_verifier={verifier}):
  {issuer}/oidc/auth?client_id=demo-mobile&response_type=code&scope=openid%20profile&redirect_uri={callback}&state=demo&code_challenge={challenge}&code_challenge_method=S256
""")


# -- dev outbox -------------------------------------------------------------------------

@main.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="show at most N messages")
@click.option("--to", "to", metavar="ADDRESS", help="only messages to this email address or number")
def outbox(limit, to):
    """Show the messages kept in dev_mode (email, sms, voice), newest first."""
    import time

    from sqlalchemy.exc import DatabaseError

    from .models import recent_outbox

    app = _app()
    with app.app_context():
        try:
            messages = recent_outbox(limit, to)
        except DatabaseError:
            raise click.ClickException("no outbox table: run 'oidc-provider db upgrade'") from None
    if not messages:
        kept = "" if app.extensions["op"].settings.dev_mode else " (dev_mode is off: nothing is kept)"
        click.echo(f"the outbox is empty{kept}")
    for message in messages:
        at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(message.at))
        subject = f"  {message.subject}" if message.subject else ""
        click.echo(f"{at}  {message.channel:5}  {message.to}{subject}")
        for line in message.body.rstrip("\n").splitlines():
            click.echo(f"    {line}".rstrip())
        click.echo("")


# -- audit log --------------------------------------------------------------------------

@main.command()
@click.option("--user", "user", metavar="U", help="a username, email address or sub")
@click.option("--client", "client_id", metavar="C", help="a client id (the admin client for API actions)")
@click.option("--event", metavar="E", help="an event name, or a prefix such as 'factor.*'")
@click.option("--since", metavar="1h|ISO", help="a duration back (90s, 15m, 1h, 7d, 2w) or an ISO 8601 time")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000), metavar="N",
              help="show at most N events")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line, every field")
def audit(user, client_id, event, since, limit, as_json):
    """The audit log, newest first: sign-in decisions, factors, enrollments, admin actions."""
    import json

    from .audit_query import QueryError, build_filter, event_dict, find_events

    with _admin() as (op, admin):
        user_id = None
        if user:
            try:
                user_id = admin.user_by_name(user).id
            except admin.AdminError:
                user_id = user  # a user since deleted: match the recorded sub
        try:
            selected = build_filter(user_id, client_id, event, since, limit)
        except QueryError as exc:
            raise click.ClickException(str(exc)) from None
        rows, _ = find_events(selected)
        events = [event_dict(row) for row in reversed(rows)]  # oldest first: reads like a log
        ids = {entry["user_id"] for entry in events if entry["user_id"]}
        names = dict(_usernames(ids))
    for entry in events:
        if as_json:
            click.echo(json.dumps(entry, separators=(",", ":"), default=str))
            continue
        who = names.get(entry["user_id"], entry["user_id"]) or "-"
        detail = " ".join(f"{key}={json.dumps(value, separators=(',', ':'), default=str)}"
                          for key, value in entry["detail"].items())
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        click.echo(f"{entry['at']}  {entry['event']:28} {who:20} {entry['client_id'] or '-':16} "
                   f"{entry['ip'] or '-':15} {detail}".rstrip())
    if not events and not as_json:
        click.echo("no matching events")


def _usernames(user_ids: set[str]) -> list[tuple[str, str]]:
    from .extensions import db as sqla
    from .models import User

    if not user_ids:
        return []
    return list(sqla.session.execute(sqla.select(User.id, User.username).where(User.id.in_(user_ids))).tuples())


# -- MFA policy -------------------------------------------------------------------------

POLICY_FILE = "config/policy.yaml"  # under the base directory


@main.group()
def policy():
    """The MFA policy in config/policy.yaml: check it, explain a login, simulate a change."""


def _load_policy(path: Path):
    from .settings.policy import load_policy

    try:
        return load_policy(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _policy_geoip(config, path: Path):
    from .authn.geoip import GeoIP

    try:
        return GeoIP(resolve_path(BASE_DIR, config.geoip_database) if config.geoip_database else None)
    except ConfigError as exc:
        raise click.ClickException(f"{path}: field 'geoip_database': {exc}") from None


def _utc(at: float) -> str:
    import time

    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
    except (OverflowError, OSError, ValueError, TypeError):
        return str(at)


def _shown(decision) -> str:
    return f"{decision.action} {decision.acr}" if decision.acr else decision.action


@policy.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
def policy_check(path):
    """Validate the policy file; names the file, rule and field of a problem."""
    from .settings.policy import rule_label

    path = path or resolve_path(BASE_DIR, POLICY_FILE)
    config = _load_policy(path)
    geoip = _policy_geoip(config, path)
    if not geoip.enabled:
        for index, rule in enumerate(config.rules):
            if rule.conditions.countries or rule.conditions.not_countries:
                click.echo(f"warning: rule '{rule_label(rule, index)}' looks at countries but geoip_database "
                           "is not set: every country is unknown", err=True)
    found = f"GeoIP {geoip.database_type}" if geoip.enabled else "no GeoIP"
    click.echo(f"{path}: policy {config.policy}, {len(config.rules)} rules, {found}, all valid")
    geoip.close()


def _parse_at(value: str | None) -> float:
    import time
    from datetime import datetime, timezone

    if not value:
        return time.time()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time such as 2024-05-04T23:30:00+02:00",
                                 param_hint="--at") from None
    if moment.tzinfo is None:  # no offset: UTC, like every time the provider stores
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@policy.command("explain")
@click.option("--user", "username", required=True, metavar="USERNAME", help="the user signing in")
@click.option("--client", "client_id", required=True, metavar="CLIENT_ID", help="the client asking")
@click.option("--ip", required=True, metavar="IP", help="the browser's IP address")
@click.option("--at", "at", metavar="ISO8601", help="when; default now; without an offset: UTC")
@click.option("--new-device/--known-device", "new_device", default=True, show_default=True,
              help="whether the browser's device cookie is new for this user")
@click.option("--failures", default=0, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="failed factor attempts on the account in the last hour")
@click.option("--rules", "rules_path", type=click.Path(path_type=Path), metavar="FILE",
              help=f"policy file; default {POLICY_FILE}")
def policy_explain(username, client_id, ip, at, new_device, failures, rules_path):
    """Decide a hypothetical login with the policy and say why."""
    import ipaddress

    from sqlalchemy.exc import DatabaseError

    from .authn.policy import LoginContext, evaluate
    from .authn.signin import login_context
    from .extensions import db as sqla
    from .models import User

    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise click.BadParameter(f"{ip!r} is not an IP address", param_hint="--ip") from None
    now = _parse_at(at)
    path = rules_path or resolve_path(BASE_DIR, POLICY_FILE)
    config = _load_policy(path)
    geoip = _policy_geoip(config, path)
    country, latitude, longitude = geoip.lookup(ip)
    has_geoip = geoip.enabled
    geoip.close()

    app = _app()
    with app.app_context():
        client = app.extensions["op"].clients.get(client_id)
        if client is None:
            raise click.ClickException(f"no client {client_id!r} in {app.extensions['op'].clients.path}")
        try:
            user = sqla.session.execute(sqla.select(User).filter_by(username=username)).scalar_one_or_none()
        except DatabaseError:
            raise click.ClickException("no users table: run 'oidc-provider db upgrade'") from None
        location = (country, latitude, longitude)
        if user is not None:
            context = login_context(user, client, ip, location, now, not new_device, failures)
        else:
            context = LoginContext(
                user_id=None, username=username, groups=(), attributes={}, user_policy=None,
                client_id=client_id, client_policy=client.config.mfa_policy, ip=ip, country=country,
                latitude=latitude, longitude=longitude, now=now, device_known=not new_device,
                recent_failures=failures, previous=None,
            )
        previous = context.previous
    decision = evaluate(config, context)

    where = f"{country or 'unknown country'}" + (f" ({latitude:.2f}, {longitude:.2f})" if latitude is not None else "")
    if user is None:
        click.echo(f"user:     {username} (no such user: no groups, attributes or policy)")
    else:
        click.echo(f"user:     {username} (sub {context.user_id}), groups: {', '.join(context.groups) or '-'}, "
                   f"policy: {context.user_policy or '-'}")
    click.echo(f"client:   {client_id}, policy: {context.client_policy or '-'}")
    click.echo(f"ip:       {ip}, {where}{'' if has_geoip else ', no GeoIP database'}")
    click.echo(f"at:       {_utc(now)}")
    click.echo(f"device:   {'new' if new_device else 'known'}, recent failures: {failures}")
    if previous is not None:
        click.echo(f"previous: {_utc(previous.at)} from {previous.ip or '-'}, {previous.country or 'unknown country'}")
    click.echo(f"rules:    {path}, global policy {config.policy}")
    click.echo(f"decision: {_shown(decision)}")
    click.echo(f"reason:   {decision.reason}")


@policy.command("simulate")
@click.option("--rules", "rules_path", required=True, type=click.Path(path_type=Path), metavar="NEW.yaml",
              help="the policy file to try")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="replay the N most recent recorded decisions")
def policy_simulate(rules_path, limit):
    """Replay recorded decisions (audit 'policy.decision') with other rules; show what changes.

    Each login is replayed with the context recorded then (its time, GeoIP data, user
    groups and policies), so only the policy file differs.
    """
    from sqlalchemy.exc import DatabaseError

    from .authn.policy import Decision, LoginContext, evaluate
    from .extensions import db as sqla
    from .models import AuditEvent

    config = _load_policy(rules_path)
    app = _app()
    with app.app_context():
        try:
            rows = sqla.session.execute(
                sqla.select(AuditEvent).filter_by(event="policy.decision")
                .order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
            ).scalars().all()
        except DatabaseError:
            raise click.ClickException("no audit table: run 'oidc-provider db upgrade'") from None
        records = [(row.id, row.detail) for row in reversed(rows)]  # oldest first
    replayed = changed = skipped = 0
    for _, detail in records:
        try:
            context = LoginContext.from_dict(detail["context"])
            old = Decision.from_dict(detail["decision"])
        except (KeyError, TypeError, ValueError):
            skipped += 1
            continue
        new = evaluate(config, context)
        replayed += 1
        if (new.action, new.acr) != (old.action, old.acr):
            changed += 1
            who = context.username or context.user_id or "-"
            click.echo(f"{_utc(context.now)}  {who}  {context.client_id}  {context.ip or '-'}  "
                       f"{_shown(old)} -> {_shown(new)}  {new.reason}")
    click.echo(f"{replayed} decisions replayed, {changed} would change")
    if skipped:
        click.echo(f"{skipped} unreadable records skipped")


# -- the reference push device ---------------------------------------------------------------

from .device_cli import device  # noqa: E402  (its own module: it talks HTTP, needs no app)

main.add_command(device)
