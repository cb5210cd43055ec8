"""ephemeral_jobs: the SQL store keeps the background queue's jobs (messages, logout tokens),
so a job outlives the process that queued it and any worker sharing the database runs it

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('ephemeral_jobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('queue', sa.String(length=255), nullable=False),
    sa.Column('due_at', sa.Float(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_ephemeral_jobs_queue_due_at', 'ephemeral_jobs', ['queue', 'due_at'], unique=False)


def downgrade():
    op.drop_index('ix_ephemeral_jobs_queue_due_at', table_name='ephemeral_jobs')
    op.drop_table('ephemeral_jobs')
