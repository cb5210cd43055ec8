from __future__ import annotations

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Int64, db


class RefreshToken(db.Model):
    """A refresh token, stored as a SHA-256 hash; rotation chains tokens into a family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Int64, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(36), index=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    resources: Mapped[list] = mapped_column(JSON, default=list)
    auth: Mapped[dict] = mapped_column(JSON)  # auth_time, acr, amr, sid of the original login
    issued_at: Mapped[int] = mapped_column(Int64)
    expires_at: Mapped[int] = mapped_column(Int64)  # absolute end of the family
    rotated_at: Mapped[int | None] = mapped_column(Int64)
    revoked_at: Mapped[int | None] = mapped_column(Int64)
    access_jti: Mapped[str | None] = mapped_column(String(64))  # access token issued beside it
    access_exp: Mapped[int | None] = mapped_column(Int64)
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))  # RFC 9449 5: a public client's key

    def get_scope(self) -> str:
        return self.scope

    def check_client(self, client) -> bool:
        return self.client_id == client.get_client_id()
