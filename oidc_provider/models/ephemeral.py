from sqlalchemy import Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class EphemeralEntry(db.Model):
    """The SQL store's rows: short-lived state when no Redis is configured."""

    __tablename__ = "ephemeral"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
