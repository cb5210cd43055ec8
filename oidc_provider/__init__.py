"""An OpenID Connect provider whose strength is multi-factor authentication."""

from __future__ import annotations

import functools
import os
import select
import time
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError

from .settings import ConfigError, Settings, load_settings

BASE_DIR = Path(os.environ.get("OIDC_PROVIDER_HOME", Path.cwd()))


@dataclass
class Provider:
    """The provider's services, built once per app; views reach them through `current_op()`."""

    settings: Settings
    base_dir: Path
    store: object
    otp: object
    keyring: object
    secret: object
    clients: object
    tokens: object
    sessions: object
    delivery: object  # email, SMS, voice (and the dev outbox)
    lockout: object = None
    levels: list = None  # acr levels (authn/acr.py), weakest first
    secret_box: object = None  # encrypts reversible secrets at rest (crypto.py)
    policy: object = None  # config/policy.yaml, reloaded on change (settings/policy.py)
    geoip_cache: dict = None  # GeoIP readers by database path (authn/signin.py)
    documents: dict = field(default_factory=dict)  # published, serialized once (oauth/endpoints.py)
    serving_hooks: list = field(default_factory=list)  # run at a process's first request (oauth/fast_path.py)
    devices: object = None
    factors: object = None  # built from the services above
    challenges: object = None  # factor challenges and abandons, for the metrics (observability.py)
    server: object = None


def resolve_path(base_dir: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


def database_uri(settings: Settings, base_dir: Path) -> str:
    uri = settings.database_url
    if uri.startswith("sqlite:///"):  # relative (from base_dir) or absolute (sqlite:////...)
        path = resolve_path(base_dir, uri.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{path}"
    if uri.startswith("postgresql://"):
        uri = "postgresql+psycopg://" + uri.removeprefix("postgresql://")
    return uri


def create_app(config_path: str | os.PathLike | None = None, overrides: dict | None = None, base_dir=None) -> Flask:
    """Build the app; nothing happens at import time (Flask's application factory)."""
    from .authn.factors import build_registry
    from .authn.acr import levels_from_settings
    from .crypto import SecretBox
    from .settings.policy import load_policy
    from .settings.reloading import ReloadingFile
    from .authn.devices import Devices
    from .authn.lockout import Lockout
    from .authn.otp import OneTimeSecrets
    from .authn.reauth import WithAccountClient
    from .authn.session import SessionService
    from .delivery import Delivery
    from .errors import register_error_handlers
    from .security import register_security_headers
    from .extensions import CookieSessions, csrf, db
    from . import background, cookies, i18n
    from .oauth.keys import KeyRing, MasterSecret
    from .observability import ChallengeTracker, configure_logging
    from .observability import init_app as init_observability
    from .oauth.fast_path import FastPath
    from .oauth.server import create_authorization_server
    from .oauth.tokens import TokenService
    from .settings.clients import ClientRegistry
    from .store import create_store

    base_dir = Path(base_dir or BASE_DIR)
    if config_path is None:
        config_path = os.environ.get("OIDC_PROVIDER_CONFIG") or base_dir / "config" / "provider.yaml"
        if not Path(config_path).exists():
            config_path = None
    settings = load_settings(config_path, overrides)
    keys_dir = resolve_path(base_dir, settings.keys_dir)
    secret = MasterSecret.load(keys_dir)
    https = settings.issuer_url.startswith("https://")

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret.derive("flask-session"),
        SQLALCHEMY_DATABASE_URI=database_uri(settings, base_dir),
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings),
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        MAX_FORM_PARTS=100,
        SESSION_COOKIE_NAME=cookies.secure_name(cookies.CSRF, https),
        SESSION_COOKIE_PATH="/",  # with no Domain and Secure: what a __Host- name requires
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,  # every cookie of ours follows it (cookies.py)
        WTF_CSRF_TIME_LIMIT=None,  # bound to the browser's session cookie instead
        OP_SETTINGS=settings,
    )
    configure_logging(settings.logging)
    app.session_interface = CookieSessions()
    db.init_app(app)
    csrf.init_app(app)
    i18n.init_app(app)  # pages and emails in the user's language (Flask-Babel)
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine, "checkin", _note_idle_since)
        event.listen(engine, "checkout", _pinging_doubtful_connections(engine.dialect))
    store = create_store(settings, engine)
    keyring = KeyRing(keys_dir)
    delivery = Delivery(settings, base_dir)
    delivery.init_app(app)  # messages leave from background threads, after the answer
    op = Provider(
        settings=settings,
        base_dir=base_dir,
        store=store,
        keyring=keyring,
        secret=secret,
        # plus the provider's own account client, for step-up before account changes (authn/reauth.py)
        clients=WithAccountClient(ClientRegistry(resolve_path(base_dir, settings.clients_file),
                                                 secret.derive("client-secret")), settings),
        tokens=TokenService(settings, keyring, store),
        sessions=SessionService(store, settings.lifetimes.session),
        delivery=delivery,
        otp=OneTimeSecrets(store, settings, secret.derive("one-time-secrets")),
    )
    op.levels = levels_from_settings(settings.acr)
    op.secret_box = SecretBox([(key_id, secret.derive(f"secret-box:{key_id}"))
                               for key_id in settings.encryption_key_ids])
    op.policy = ReloadingFile(resolve_path(base_dir, settings.policy_file),
                              lambda path: load_policy(path, missing_ok=True))
    op.geoip_cache = {}
    op.lockout = Lockout(settings)
    op.devices = Devices(secret.derive("trusted-devices"), settings)
    op.factors = build_registry(op)
    op.challenges = ChallengeTracker(store, settings.lifetimes.interaction, [f.id for f in op.factors])
    app.extensions["op"] = op
    op.serving_hooks.append(functools.partial(background.start_all, app))  # messages, logout tokens
    op.server = create_authorization_server(app, op)
    app.wsgi_app = FastPath(app.wsgi_app, op, engine)  # the hot endpoints before Flask (oauth/fast_path.py)

    from .oauth.endpoints import bp as oidc_bp
    from .views import (account, account_security, admin_api, direct_api, federation, interaction, push, recovery,
                        totp, webauthn)

    app.register_blueprint(oidc_bp)
    for view in (interaction, account, account_security, totp, recovery, webauthn, push, federation):
        app.register_blueprint(view.bp)
    app.register_blueprint(direct_api.bp)
    app.register_blueprint(admin_api.bp)
    csrf.exempt(admin_api.bp)  # Bearer-authenticated API calls, not browser forms
    # the Transmit guide's URLs (https://host/cis/v1/auth/...) work with only the host changed
    app.register_blueprint(direct_api.bp, url_prefix="/cis/v1/auth", name="direct_api_cis")
    if settings.mfa_api.enabled:  # Auth0's MFA API and its /oauth/token path (views/mfa_api.py)
        from .views import mfa_api

        app.register_blueprint(mfa_api.bp)
        csrf.exempt(mfa_api.bp)  # Bearer- and client-authenticated API calls, not browser forms
    for endpoint, view in list(app.view_functions.items()):
        if endpoint.startswith("direct_api"):  # Bearer-authenticated API calls, not browser forms
            csrf.exempt(view)
    if settings.dev_mode:
        from .views.dev import bp as dev_bp

        app.register_blueprint(dev_bp)
    csrf.exempt(oidc_bp)  # protocol endpoints authenticate clients, not browser forms
    from .oauth import backchannel, device

    backchannel.init_app(app, op)  # logout tokens when sessions end (Back-Channel Logout 1.0)
    device.init_app(app, op)  # RFC 8628, when enabled
    register_error_handlers(app)
    register_security_headers(app, https)
    init_observability(app, op)
    return app


def _sqlite_pragmas(connection, _record) -> None:
    """WAL lets readers go on while one writer writes; waits instead of 'database is locked'."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# A pooled connection is pinged before use when it has been idle for longer than this, or when
# the server has closed it or written to it meanwhile (its socket is readable: a select() call,
# no round trip). A busy, healthy connection is not pinged: a ping is a round trip per transaction.
PING_AFTER_IDLE_SECONDS = 1.0


def _note_idle_since(_dbapi_connection, record) -> None:
    record.info["idle_since"] = time.monotonic()


def _pinging_doubtful_connections(dialect):
    """SQLAlchemy's pessimistic disconnect handling, for connections in doubt only: a failed
    ping makes the pool discard the connection and check out (or open) another."""

    def ping_if_doubtful(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.get("idle_since")
        recently_used = idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS
        if recently_used and not select.select([dbapi_connection.fileno()], [], [], 0)[0]:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001 - any failure: the connection is not usable
            raise DisconnectionError() from exc

    return ping_if_doubtful


def _engine_options(settings: Settings) -> dict:
    if settings.database_url.startswith("sqlite"):
        # Writers wait for each other instead of failing with "database is locked".
        # SQLite serializes writers: let waiting requests queue for the file lock, not for the pool
        return {"connect_args": {"timeout": 30, "check_same_thread": False}, "pool_size": 20, "max_overflow": 20}
    # connect_timeout: an unreachable server fails a request (and /readyz) instead of hanging it
    return {"pool_size": 10, "max_overflow": 20, "connect_args": {"connect_timeout": 5}}


__all__ = ["ConfigError", "Provider", "create_app"]
