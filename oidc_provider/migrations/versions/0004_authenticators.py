"""authenticators: TOTP apps, WebAuthn credentials, push devices, recovery codes

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('authenticators',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('secret', sa.Text(), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('lookup', sa.String(length=255), nullable=True),
    sa.Column('confirmed', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('last_used_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('authenticators', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_authenticators_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_authenticators_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_authenticators_lookup'), ['lookup'], unique=False)


def downgrade():
    with op.batch_alter_table('authenticators', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_authenticators_lookup'))
        batch_op.drop_index(batch_op.f('ix_authenticators_kind'))
        batch_op.drop_index(batch_op.f('ix_authenticators_user_id'))
    op.drop_table('authenticators')
