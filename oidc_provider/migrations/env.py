"""Alembic environment: run by `oidc-provider db upgrade` with a live connection."""

from alembic import context

from oidc_provider import models  # noqa: F401  (registers the tables)
from oidc_provider.extensions import db

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=db.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
