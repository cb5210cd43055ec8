"""refresh_tokens.dpop_jkt: the DPoP key a public client's refresh token is bound to (RFC 9449 5)

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_column('dpop_jkt')
