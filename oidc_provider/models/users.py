from __future__ import annotations

import time
import uuid

from sqlalchemy import JSON, Boolean, Float, Integer, String, bindparam, false
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Int64, db


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    username: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True, index=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    phone_number: Mapped[str | None] = mapped_column(String(32))
    phone_number_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str | None] = mapped_column(String(256))
    password_hash: Mapped[str | None] = mapped_column(String(256))  # argon2id
    groups: Mapped[list] = mapped_column(JSON, default=list)
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(Int64, default=lambda: int(time.time()))
    mfa_policy: Mapped[str | None] = mapped_column(String(16))  # never | adaptive | always; None: client's
    # Set by an admin (oidc_provider/admin.py): the next sign-in must enroll a factor first.
    mfa_enrollment_required: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Failed factor attempts in a row, any factor (NIST SP 800-63B 5.2.2); reset by a success.
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[float | None] = mapped_column(Float)
    last_login: Mapped[dict | None] = mapped_column(JSON)  # at, ip, country, latitude, longitude

    @property
    def sub(self) -> str:
        return self.id

    @classmethod
    def find_by_login(cls, login: str) -> User | None:
        """A login name is the username or the primary email address."""
        key = login_key(login)
        if key is None:
            return None
        return db.session.execute(_BY_EMAIL if key[0] == "email" else _BY_USERNAME,
                                  {"login": key[1]}).scalar_one_or_none()

    @classmethod
    def is_active(cls, user_id: str) -> bool:
        """The account exists and is not disabled: all a token grant needs to know of it."""
        return db.session.execute(DISABLED, {"id": user_id}).scalar() is False

    @classmethod
    def find_by_phone(cls, number: str) -> User | None:
        """The account whose *verified* phone number this is (numbers are not unique until verified)."""
        if "\x00" in number:
            return None
        rows = db.session.execute(
            db.select(cls).filter_by(phone_number=number.strip(), phone_number_verified=True)
        ).scalars().all()
        return rows[0] if len(rows) == 1 else None


def login_key(login: str) -> tuple[str, str] | None:
    """The column a login name is looked up in and the value to look for (emails are kept in
    lower case), or None for a name no account has."""
    login = login.strip()
    if not login or "\x00" in login:  # PostgreSQL text cannot even compare a NUL
        return None
    return ("email", login.lower()) if "@" in login else ("username", login)


def claims_for_scope(user, scopes: set[str]) -> dict:
    """OpenID Connect Core 5.4: standard claims by scope, of a User or a row of USERINFO_COLUMNS."""
    claims: dict = {}
    if "profile" in scopes:
        claims["preferred_username"] = user.username
        if user.name:
            claims["name"] = user.name
    if "email" in scopes and user.email:
        claims["email"] = user.email
        claims["email_verified"] = bool(user.email_verified)
    if "phone" in scopes and user.phone_number:
        claims["phone_number"] = user.phone_number
        claims["phone_number_verified"] = bool(user.phone_number_verified)
    return claims


# Whether an account is disabled (NULL: no such account), for the token grants (also oauth/fast_path.py)
DISABLED = db.select(User.disabled).where(User.id == bindparam("id"))
# What userinfo reads of an account, without loading it (oauth/fast_path.py)
USERINFO_COLUMNS = db.select(User.id, User.disabled, User.username, User.name, User.email, User.email_verified,
                             User.phone_number, User.phone_number_verified).where(User.id == bindparam("id"))

# Built once: a sign-in runs them on every password login
_BY_EMAIL = db.select(User).where(User.email == bindparam("login"))
_BY_USERNAME = db.select(User).where(User.username == bindparam("login"))
