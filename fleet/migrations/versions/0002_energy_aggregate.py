"""Building-level energy aggregates of the flats' readings (energy.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 02:20:44.878171
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "energy_aggregate",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("unit", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=False),
        sa.Column("flats", sa.Integer(), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("total", sa.Float(), nullable=True),
        sa.Column("mean", sa.Float(), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id", "quantity", "start"),
    )
    with op.batch_alter_table("energy_aggregate", schema=None) as batch_op:
        batch_op.create_index("ix_energy_aggregate_site_id", ["site_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("energy_aggregate", schema=None) as batch_op:
        batch_op.drop_index("ix_energy_aggregate_site_id")
    op.drop_table("energy_aggregate")
