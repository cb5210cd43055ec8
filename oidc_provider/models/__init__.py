"""Durable data: users, refresh tokens, the audit log, and the SQL store's table."""

from .audit import AuditEvent, record_audit
from .ephemeral import EphemeralEntry
from .tokens import RefreshToken
from .users import User

__all__ = ["AuditEvent", "EphemeralEntry", "RefreshToken", "User", "record_audit"]
