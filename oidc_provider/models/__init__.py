"""Durable data: users, refresh tokens, the audit log, the dev outbox, and the SQL store's table."""

from .audit import AuditEvent, record_audit
from .authenticators import Authenticator, confirmed_authenticators
from .devices import UserDevice
from .ephemeral import EphemeralEntry, EphemeralJob
from .federation import FederatedIdentity
from .outbox import OutboxMessage, keep_in_outbox, recent_outbox
from .tokens import RefreshToken
from .users import User

__all__ = ["AuditEvent", "Authenticator", "confirmed_authenticators", "EphemeralEntry", "EphemeralJob", "FederatedIdentity", "OutboxMessage", "RefreshToken", "User", "UserDevice", "keep_in_outbox",
           "recent_outbox", "record_audit"]
