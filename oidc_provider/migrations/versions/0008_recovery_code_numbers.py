"""authenticators.number: recovery codes are numbered, so a sign-in asks for a specific one
(NIST SP 800-63B-3 5.1.2.2); the codes already saved are numbered in the order they were made

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# A set is made in one transaction with one created_at, in the order it was shown: the id breaks the tie.
NUMBER_EXISTING_CODES = """
UPDATE authenticators SET number = (
    SELECT COUNT(*) FROM authenticators AS earlier
    WHERE earlier.user_id = authenticators.user_id AND earlier.kind = 'recovery-code'
      AND (earlier.created_at < authenticators.created_at
           OR (earlier.created_at = authenticators.created_at AND earlier.id <= authenticators.id)))
WHERE kind = 'recovery-code'
"""


def upgrade():
    with op.batch_alter_table('authenticators', schema=None) as batch_op:
        batch_op.add_column(sa.Column('number', sa.Integer(), nullable=True))
    op.execute(NUMBER_EXISTING_CODES)


def downgrade():
    with op.batch_alter_table('authenticators', schema=None) as batch_op:
        batch_op.drop_column('number')
