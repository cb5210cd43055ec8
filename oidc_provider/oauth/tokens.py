"""Issuing, checking and revoking tokens.

Access tokens are JWTs (RFC 9068) signed once; they carry acr, amr and auth_time so
resource servers can judge how the user logged in. Refresh tokens are opaque, stored
as SHA-256 hashes, and rotate: each use marks the old one rotated in one atomic
UPDATE, and presenting a rotated token again revokes its whole family (RFC 9700 4.14.2).
Revoked access tokens are remembered by `jti` in the ephemeral store until they expire.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

from authlib.oidc.core.util import create_half_hash
from joserfc.errors import JoseError
from sqlalchemy import String, bindparam, delete, null, select, update

from ..extensions import Int64, db
from ..models import RefreshToken, User

# The refresh grant's statements, built once (building an expression costs more than running it)
_TABLE = RefreshToken.__table__
_USER_DISABLED = db.select(User.disabled).where(User.id == _TABLE.c.user_id).scalar_subquery()  # NULL: no user
_LIVE = (_TABLE.c.token_hash == bindparam("presented_hash"), _TABLE.c.rotated_at.is_(None),
         _TABLE.c.revoked_at.is_(None), _TABLE.c.expires_at > bindparam("now"))
_CLAIMED = update(_TABLE).where(*_LIVE).values(rotated_at=bindparam("now"))
# the Authlib grant's claim: the token's columns and its user's state, in one round trip
_CLAIM = _CLAIMED.returning(*_TABLE.c, _USER_DISABLED.label("user_disabled"))
_INSERT = _TABLE.insert().inline()  # nothing reads the new row's id back
# the fast path's (fast_path.py): the claim and, in the same statement, a copy of the token as its
# successor (new hash, access token id and times; the access token's lifetime the predecessor's),
# returned as stored so the answer can be made from it, before anything is signed
_CLAIM_FOR_COPY = _CLAIMED.where(_TABLE.c.client_id == bindparam("claiming_client"), _TABLE.c.dpop_jkt.is_(None),
                                 _USER_DISABLED.is_(False))
_COPIED = ("family_id", "client_id", "user_id", "scope", "resources", "auth", "expires_at")
_SUCCESSOR = [column for column in _TABLE.c if column.name not in ("id", "rotated_at", "revoked_at")]


def _copy_of(claimed):
    """INSERT the successor made of `claimed` (the presented token's row), RETURNING it."""
    return (_TABLE.insert()
            .from_select([*_COPIED, "token_hash", "issued_at", "access_jti", "access_exp"],
                         select(*(claimed.c[name] for name in _COPIED), bindparam("successor_hash", type_=String),
                                bindparam("now", type_=Int64), bindparam("successor_jti", type_=String),
                                bindparam("now", type_=Int64) + (claimed.c.access_exp - claimed.c.issued_at)))
            .returning(*_SUCCESSOR))


_COPY = _copy_of(_CLAIM_FOR_COPY.returning(*(_TABLE.c[name] for name in (*_COPIED, "access_exp", "issued_at")))
                 .cte("claimed"))  # PostgreSQL: one statement, atomic without a transaction
_CLAIM_ID = _CLAIM_FOR_COPY.returning(_TABLE.c.id)  # elsewhere: the claim, then the copy, one transaction
_COPY_BY_ID = _copy_of(select(_TABLE).where(_TABLE.c.id == bindparam("claimed_id")).subquery())
_UNCLAIM = (update(_TABLE).where(_TABLE.c.token_hash == bindparam("presented_hash"),
                                 _TABLE.c.rotated_at == bindparam("now")).values(rotated_at=null()))
_DROP_COPY = delete(_TABLE).where(_TABLE.c.token_hash == bindparam("successor_hash"))
_AMEND = update(_TABLE).where(_TABLE.c.token_hash == bindparam("successor_hash"))  # SET: the columns given
_REVOKE_FAMILY = (update(_TABLE).where(_TABLE.c.family_id == bindparam("family"), _TABLE.c.revoked_at.is_(None))
                  .values(revoked_at=bindparam("now")))
_FAMILY_ACCESS = select(_TABLE.c.access_jti, _TABLE.c.access_exp).where(_TABLE.c.family_id == bindparam("family"))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def audiences(claims: dict) -> list[str]:
    """A token's `aud` as a list (RFC 7519 4.1.3: a string or an array)."""
    aud = claims.get("aud")
    return aud if isinstance(aud, list) else [aud]


@dataclass(frozen=True)
class AuthContext:
    """How the user authenticated: what acr, amr and auth_time are made of."""

    auth_time: int
    acr: str | None
    amr: list[str]
    sid: str | None = None
    factors: list[dict] | None = None  # factor, amr, flow, at: so acr can fall back as they age

    def to_dict(self) -> dict:
        return {"auth_time": self.auth_time, "acr": self.acr, "amr": self.amr, "sid": self.sid,
                "factors": self.factors}

    @classmethod
    def from_dict(cls, data: dict | None) -> AuthContext | None:
        return cls(**data) if data else None


@dataclass(frozen=True)
class Issue:
    """Everything one token response is made from."""

    client: object
    grant_type: str
    sub: str
    scope: str
    auth: AuthContext | None
    resources: tuple[str, ...] = ()
    include_refresh: bool = False
    family_id: str | None = None  # continue this refresh family, else start one
    refresh_scope: str | None = None  # RFC 6749 6: a rotated token keeps the original scope
    refresh_expires_at: int | None = None
    access_jti: str | None = None
    refresh_token: str | None = None  # the one to issue (its row already stored), else a new one
    dpop_jkt: str | None = None  # RFC 9449: bind the access token (and a public client's refresh token)


@dataclass(frozen=True)
class Rotation:
    """A refresh token the fast path claimed, and the copy of it stored as its successor."""

    presented_hash: str
    now: int
    successor_value: str  # the refresh token the answer hands out
    successor: object  # its row as stored (RefreshToken's columns): what the answer is made of


class TokenService:
    def __init__(self, settings, keyring, store):
        self.settings = settings
        self.keyring = keyring
        self.store = store
        self.issuer = settings.issuer_url

    # -- lifetimes -------------------------------------------------------------------
    def access_token_lifetime(self, client, resources) -> int:
        """The resource's lifetime (Transmit: resource with access token expiration), else
        the client's, else the default; with several resources the shortest wins."""
        configured = [self.settings.resources[r].access_token_lifetime for r in resources]
        configured = [value for value in configured if value]
        if configured:
            return min(configured)
        return client.config.access_token_lifetime or self.settings.lifetimes.access_token

    # -- issuing ---------------------------------------------------------------------
    def issue(self, spec: Issue) -> dict:
        """The token response, its refresh token stored and committed with the request's session."""
        token, successor = self.respond(spec)
        if successor is not None:
            self.save_refresh_token(successor, db.session)
        return token

    def save_refresh_token(self, successor: dict, sql) -> None:
        """`respond`'s refresh token row, committed on `sql` (the request's session, or the fast
        path's connection)."""
        sql.execute(_INSERT, successor)
        sql.commit()

    def respond(self, spec: Issue) -> tuple[dict, dict | None]:
        """The token response, and the row of its refresh token (None without one), not stored."""
        now = int(time.time())
        lifetime = self.access_token_lifetime(spec.client, spec.resources)
        jti = spec.access_jti or uuid.uuid4().hex
        claims = {
            "iss": self.issuer,
            "sub": spec.sub,
            "aud": list(spec.resources) if len(spec.resources) > 1 else (spec.resources or (self.issuer,))[0],
            "exp": now + lifetime,
            "iat": now,
            "jti": jti,
            "client_id": spec.client.client_id,
        }
        if spec.scope:
            claims["scope"] = spec.scope
        if spec.auth:
            claims["auth_time"] = spec.auth.auth_time
            claims["amr"] = spec.auth.amr
            if spec.auth.acr:
                claims["acr"] = spec.auth.acr
        if spec.dpop_jkt:
            claims["cnf"] = {"jkt": spec.dpop_jkt}  # RFC 9449 6.1
        # RFC 9068 2.1: typ at+jwt, so an access token is never mistaken for an ID token
        token = {
            "access_token": self.keyring.sign(claims, "RS256", typ="at+jwt"),
            "token_type": "DPoP" if spec.dpop_jkt else "Bearer",
            "expires_in": lifetime,
        }
        if spec.scope:
            token["scope"] = spec.scope
        if not spec.include_refresh:
            return token, None
        token["refresh_token"] = spec.refresh_token or secrets.token_urlsafe(32)
        client_lifetime = spec.client.config.refresh_token_lifetime or self.settings.lifetimes.refresh_token
        return token, dict(
            token_hash=sha256_hex(token["refresh_token"]),
            family_id=spec.family_id or uuid.uuid4().hex,
            client_id=spec.client.client_id,
            user_id=spec.sub,
            scope=spec.refresh_scope if spec.refresh_scope is not None else spec.scope,
            resources=list(spec.resources),
            auth=spec.auth.to_dict() if spec.auth else {},
            issued_at=now,
            expires_at=spec.refresh_expires_at or now + client_lifetime,
            access_jti=jti,
            access_exp=now + lifetime,
            # RFC 9449 5: confidential clients' refresh tokens are already bound by client authentication
            dpop_jkt=spec.dpop_jkt if spec.client.is_public else None,
        )

    def id_token(self, client, sub: str, auth: AuthContext, access_token: str | None, nonce: str | None) -> str:
        """OIDC Core 2 and 3.1.3.6; on refresh (12.2) the original auth_time, acr, amr, no nonce."""
        alg = client.id_token_signed_response_alg or self.settings.id_token_signing_alg
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "aud": client.client_id,
            "exp": now + self.settings.lifetimes.id_token,
            "iat": now,
            "auth_time": auth.auth_time,
            "amr": auth.amr,
        }
        if auth.acr:
            claims["acr"] = auth.acr
        if auth.sid:
            claims["sid"] = auth.sid
        if nonce:
            claims["nonce"] = nonce
        if access_token:
            claims["at_hash"] = create_half_hash(access_token, alg).decode()
        return self.keyring.sign(claims, alg)

    # -- checking --------------------------------------------------------------------
    def verify_access_token(self, token: str) -> dict | None:
        """Claims of a valid, unexpired, unrevoked access token of ours, else None."""
        if not token or len(token) > 8192:
            return None
        try:
            decoded = self.keyring.verify(token)
        except (JoseError, ValueError):
            return None
        claims = decoded.claims
        if decoded.header.get("typ") != "at+jwt" or claims.get("iss") != self.issuer:
            return None
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
            return None
        if self.store.get(f"revoked-at:{claims.get('jti')}") is not None:
            return None
        return claims

    def find_refresh_token(self, value: str) -> RefreshToken | None:
        if not value or len(value) > 512:
            return None
        return db.session.execute(
            db.select(RefreshToken).filter_by(token_hash=sha256_hex(value))
        ).scalar_one_or_none()

    def claim_refresh_token(self, value: str) -> tuple[RefreshToken | None, bool]:
        """Mark a live token rotated and return it with whether its user exists and is active;
        of concurrent uses exactly one gets it (the row stays locked until the request commits,
        so a concurrent claim waits and then finds it rotated). Not committed here: `issue`
        commits the claim together with its successor, one transaction per rotation, and a
        request that fails in between rolls back and spends nothing."""
        if not value or len(value) > 512:
            return None, False
        row = db.session.execute(_CLAIM, {"presented_hash": sha256_hex(value), "now": int(time.time())}).first()
        if row is None:
            return None, False
        columns = row._asdict()
        user_disabled = columns.pop("user_disabled")
        return RefreshToken(**columns), user_disabled is False  # NULL: no such user

    def claim_for_rotation(self, value: str, client_id: str, sql, one_statement: bool) -> Rotation | None:
        """Claim a live refresh token of `client_id`, unbound (no DPoP key), of an active user,
        and store a copy of it as its successor, committed together before the answer is signed:
        on PostgreSQL (`one_statement`) in one autocommitted statement, a refresh's only round
        trip in the common case. None when nothing was claimed: the full endpoint judges (a
        replay revokes the family there); a concurrent use that claimed it first is one."""
        if not value or len(value) > 512:
            return None
        successor_value = secrets.token_urlsafe(32)
        params = {"presented_hash": sha256_hex(value), "now": int(time.time()), "claiming_client": client_id,
                  "successor_hash": sha256_hex(successor_value), "successor_jti": uuid.uuid4().hex}
        if one_statement:
            row = sql.execute(_COPY, params).first()
        else:
            claimed = sql.execute(_CLAIM_ID, params).first()
            row = claimed and sql.execute(_COPY_BY_ID, {**params, "claimed_id": claimed.id}).first()
            sql.commit()
        return row and Rotation(params["presented_hash"], params["now"], successor_value, row)

    def settle(self, rotation: Rotation, successor: dict, sql) -> None:
        """Write over the stored copy what the answer's successor (`respond`) has otherwise: an acr
        whose factors aged out, a lifetime configured since, a second that passed. Usually nothing."""
        changed = {name: value for name, value in successor.items() if getattr(rotation.successor, name) != value}
        if changed:
            sql.execute(_AMEND, {"successor_hash": successor["token_hash"], **changed})
            sql.commit()

    def undo(self, rotation: Rotation, sql) -> None:
        """Give a claim back when its answer failed: the presented token live again, its copy (never
        handed out) gone, so the full endpoint can answer the request as if it came first."""
        sql.execute(_UNCLAIM, {"presented_hash": rotation.presented_hash, "now": rotation.now})
        sql.execute(_DROP_COPY, {"successor_hash": rotation.successor.token_hash})
        sql.commit()

    def refresh_token_is_live(self, row: RefreshToken) -> bool:
        return row.rotated_at is None and row.revoked_at is None and row.expires_at > time.time()

    # -- revoking --------------------------------------------------------------------
    def revoke_access_token(self, jti: str, exp: int) -> None:
        ttl = exp - time.time()
        if ttl > 0:
            self.store.set(f"revoked-at:{jti}", 1, ttl + 5)

    def revoke_family(self, family_id: str, sql=None) -> None:
        """Revoke every refresh token of a family and the access tokens issued with them (on `sql`,
        the fast path's connection, else the request's session)."""
        sql = sql or db.session
        sql.execute(_REVOKE_FAMILY, {"family": family_id, "now": int(time.time())})
        sql.commit()
        for row in sql.execute(_FAMILY_ACCESS, {"family": family_id}).all():
            if row.access_jti and row.access_exp:
                self.revoke_access_token(row.access_jti, row.access_exp)
