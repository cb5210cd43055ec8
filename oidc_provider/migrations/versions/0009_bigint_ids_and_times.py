"""64-bit row ids where every refresh or sign-in adds rows, and 64-bit Unix times: an int4
sequence runs out after 2^31 rows ever inserted (about 25 days at a thousand refreshes a
second, each rotation inserting one), and an int4 time after 19 January 2038 (a refresh token
family ending later cannot be stored). PostgreSQL only: SQLite's INTEGER already holds 64 bits.

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# table -> its serial id (None: no own id column to widen) and the time columns
WIDENED = {
    'refresh_tokens': ('id', ['issued_at', 'expires_at', 'rotated_at', 'revoked_at', 'access_exp']),
    'audit_events': ('id', []),
    'users': (None, ['created_at']),
}


def _alter(to_type, sequence_type: str) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table, (serial, times) in WIDENED.items():
        for column in ([serial] if serial else []) + times:
            op.alter_column(table, column, type_=to_type)
        if serial:  # the sequence behind a serial column is int4 too (PostgreSQL 10+)
            sequence = op.get_bind().execute(sa.text("SELECT pg_get_serial_sequence(:table, :column)"),
                                             {"table": table, "column": serial}).scalar_one()
            op.execute(f"ALTER SEQUENCE {sequence} AS {sequence_type}")


def upgrade():
    _alter(sa.BigInteger(), 'bigint')


def downgrade():
    _alter(sa.Integer(), 'integer')
