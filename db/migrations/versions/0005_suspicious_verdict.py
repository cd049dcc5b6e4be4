"""Audit runs may end `suspicious`: a candidate evaluation failed a sanity check, so the run does not pass.

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-10
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BEFORE = ("passed", "regressed", "error", "baseline")
AFTER = (*BEFORE, "suspicious")


def _verdict_check(values: tuple[str, ...]) -> str:
    return f"verdict IS NULL OR verdict IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch:
        batch.drop_constraint("ck_audit_runs_verdict", type_="check")
        batch.create_check_constraint("ck_audit_runs_verdict", _verdict_check(AFTER))


def downgrade() -> None:
    # The older schema knows no `suspicious`: such runs become `error` (not judged; never a baseline either).
    op.execute("UPDATE audit_runs SET verdict = 'error' WHERE verdict = 'suspicious'")
    with op.batch_alter_table("audit_runs") as batch:
        batch.drop_constraint("ck_audit_runs_verdict", type_="check")
        batch.create_check_constraint("ck_audit_runs_verdict", _verdict_check(BEFORE))
