"""Audit repository on SQLite and PostgreSQL: slot-unique runs, compare-and-set, cascades, the migration."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from db import migrate
from db.base import utcnow
from db.models import AuditRun, Job
from db.repositories import audits, jobs
from db.session import make_engine, make_session_factory, session_scope
from tests.support.factories import add_dataset, add_job, add_model


def add_audit(session, name: str = "nightly", **fields):
    dataset = add_dataset(session, name=f"data-{name}")
    values = dict(
        name=name,
        dataset_id=dataset.id,
        config={"eps": [0.0, 0.1]},
        thresholds={"accuracy_drop_pp": 5.0},
        model_name="tiny",
        cron="0 3 * * *",
        timezone="UTC",
    )
    return audits.create(session=session, **(values | fields))


def test_one_run_per_audit_and_slot(session):
    audit = add_audit(session)
    first = audits.create_run(
        session=session, audit=audit, slot="at:2025-11-26T03:00:00Z", trigger="schedule"
    )
    again = audits.create_run(
        session=session, audit=audit, slot="at:2025-11-26T03:00:00Z", trigger="schedule"
    )
    other = audits.create_run(session=session, audit=audit, slot="manual:x", trigger="manual")
    assert first is not None and again is None and other is not None
    # the failed insert rolled back only its savepoint: the session and the first run are intact
    assert [run.slot for run in audits.list_runs(session=session, audit_id=audit.id)] == [
        "manual:x",
        first.slot,
    ]
    assert first.thresholds == {"accuracy_drop_pp": 5.0} and first.status == "pending"


def test_two_sessions_racing_for_a_slot_create_one_run(factory):
    with session_scope(factory) as session:
        audit_id = add_audit(session).id
    barrier, results = threading.Barrier(2), []

    def insert() -> None:
        with session_scope(factory) as session:
            audit = audits.get(session=session, audit_id=audit_id)
            barrier.wait()
            results.append(audits.create_run(session=session, audit=audit, slot="at:1", trigger="schedule"))

    threads = [threading.Thread(target=insert) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(AuditRun)) == 1
    assert sum(run is not None for run in results) == 1


def test_status_changes_are_compare_and_set(session):
    run = audits.create_run(session=session, audit=add_audit(session), slot="manual:a", trigger="manual")
    assert audits.transition_run(session=session, run_id=run.id, from_status="pending", to_status="running")
    assert not audits.transition_run(
        session=session, run_id=run.id, from_status="pending", to_status="running"
    )
    assert audits.transition_run(
        session=session, run_id=run.id, from_status="running", to_status="finished", verdict="passed"
    )
    assert (run.status, run.verdict) == ("finished", "passed")
    with pytest.raises(ValueError):
        audits.update_run(session=session, run=run, status="pending")
    assert not audits.delete_run(session=session, run_id=run.id)  # only a pending run can be undone


def test_the_database_refuses_invalid_rows(session):
    with pytest.raises(IntegrityError), session.begin_nested():
        add_audit(session, name="both", model_ids=[1])  # two model selectors
    with pytest.raises(IntegrityError), session.begin_nested():
        add_audit(session, name="two-schedules", interval_s=60)
    audit = add_audit(session)
    with pytest.raises(IntegrityError), session.begin_nested():
        session.add(
            AuditRun(audit_id=audit.id, slot="x", trigger="whenever", status="pending", thresholds={})
        )
        session.flush()


def test_latest_runs_reference_jobs_and_run_jobs(session):
    audit = add_audit(session)
    model = add_model(session, name="tiny")
    runs = [
        audits.create_run(session=session, audit=audit, slot=f"manual:{i}", trigger="manual")
        for i in range(4)
    ]
    dataset = add_dataset(session, name="jobs-data")
    earlier = [add_job(session, model=model, dataset=dataset) for _ in runs[:3]]
    for run, job, verdict in zip(runs[:3], earlier, ("baseline", "regressed", "passed"), strict=True):
        audits.transition_run(
            session=session, run_id=run.id, from_status="pending", to_status="finished", verdict=verdict
        )
        audits.create_run_job(session=session, run=run, job=job)
    # newest run first, and only runs that passed or were a baseline
    assert [
        (run_id, job.id)
        for run_id, job in audits.list_reference_jobs(
            session=session, audit_id=audit.id, before_run_id=runs[3].id
        )
    ] == [(runs[2].id, earlier[2].id), (runs[0].id, earlier[0].id)]
    assert [
        run_id
        for run_id, _ in audits.list_reference_jobs(
            session=session, audit_id=audit.id, before_run_id=runs[2].id
        )
    ] == [runs[0].id]
    assert audits.list_latest_runs(session=session, audit_ids=[audit.id])[audit.id].id == runs[3].id
    finished = audits.list_latest_runs(session=session, audit_ids=[audit.id], status="finished")
    assert finished[audit.id].id == runs[2].id
    job = add_job(session, model=model, dataset=dataset)
    audits.create_run_job(session=session, run=runs[3], job=job)
    assert audits.get_run_for_job(session=session, job_id=job.id).id == runs[3].id
    [(run_id, listed)] = audits.list_run_jobs(session=session, run_ids=[runs[3].id])
    assert (run_id, listed.id) == (runs[3].id, job.id)


def test_deleting_an_audit_deletes_its_runs_but_keeps_their_jobs(factory):
    with session_scope(factory) as session:
        audit = add_audit(session)
        run = audits.create_run(session=session, audit=audit, slot="manual:a", trigger="manual")
        job = add_job(session)
        audits.create_run_job(session=session, run=run, job=job)
        ids = audit.id, job.id
    with session_scope(factory) as session:
        audits.delete(session=session, audit=audits.get(session=session, audit_id=ids[0]))
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(AuditRun)) == 0
        assert jobs.get(session=session, job_id=ids[1]) is not None
        assert audits.get_run_for_job(session=session, job_id=ids[1]) is None


def test_a_pinned_baseline_job_cannot_be_deleted(factory):
    with session_scope(factory) as session:
        job = add_job(session)
        add_audit(session, baseline_job_id=job.id)
        job_id = job.id
    with pytest.raises(IntegrityError), session_scope(factory) as session:
        jobs.delete(session=session, job=jobs.get(session=session, job_id=job_id))


def test_upgrading_a_database_with_jobs_adds_the_audit_tables(db_url):
    migrate.upgrade(db_url, "0001")
    engine = make_engine(db_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            # rows written by the previous version survive the upgrade (the job with 0001's columns only)
            model_id, dataset_id = add_model(session).id, add_dataset(session).id
        with engine.begin() as connection:
            job_id = connection.execute(
                text(
                    "INSERT INTO jobs (model_id, dataset_id, config, status, progress, attempts, cancel_requested, "
                    "created_at) VALUES (:m, :d, '{}', 'queued', 0, 0, false, :now) RETURNING id"
                ),
                {"m": model_id, "d": dataset_id, "now": utcnow()},
            ).scalar_one()
        migrate.upgrade(db_url)
        with session_scope(make_session_factory(engine)) as session:
            assert session.get(Job, job_id) is not None
            audit = add_audit(session)
            assert (
                audits.create_run(session=session, audit=audit, slot="at:1", trigger="schedule") is not None
            )
        migrate.downgrade(db_url, "0001")
        assert migrate.current(db_url) == "0001"
    finally:
        engine.dispose()


def test_the_upgrade_marks_the_jobs_of_launched_runs_as_sent(db_url):
    migrate.upgrade(db_url, "0002")
    engine = make_engine(db_url)
    started = utcnow() - timedelta(hours=1)
    try:
        with session_scope(make_session_factory(engine)) as session:
            audit_id = add_audit(session).id
        with engine.begin() as connection:  # rows as revision 0002 wrote them (it has no jobs_sent_at)
            connection.execute(
                AuditRun.__table__.insert(),
                [
                    {
                        "audit_id": audit_id,
                        "slot": slot,
                        "trigger": "manual",
                        "status": status,
                        "thresholds": {},
                        "started_at": start,
                        "created_at": started,
                        "webhook_attempts": 0,
                    }
                    for slot, status, start in (
                        ("manual:a", "running", started),
                        ("manual:b", "pending", None),
                    )
                ],
            )
        migrate.upgrade(db_url)
        with session_scope(make_session_factory(engine)) as session:
            sent = {run.slot: run.jobs_sent_at for run in session.scalars(select(AuditRun))}
        assert sent == {"manual:a": started, "manual:b": None}
    finally:
        engine.dispose()


def test_each_webhook_attempt_is_claimed_once_and_recorded_only_by_its_claimer(session):
    run = audits.create_run(session=session, audit=add_audit(session), slot="manual:a", trigger="manual")
    audits.update_run(session=session, run=run, webhook_status="pending")
    now = utcnow()
    assert audits.claim_webhook_attempt(session=session, run_id=run.id, attempts=0, at=now)
    assert not audits.claim_webhook_attempt(session=session, run_id=run.id, attempts=0, at=now)  # a duplicate
    assert audits.claim_webhook_attempt(session=session, run_id=run.id, attempts=1, at=now)
    # attempt 1's outcome comes after attempt 2 was claimed: it must not overwrite attempt 2's bookkeeping
    assert not audits.record_webhook_attempt(
        session=session, run_id=run.id, attempt=1, status="failed", error="late", at=now
    )
    assert audits.record_webhook_attempt(
        session=session, run_id=run.id, attempt=2, status="delivered", error=None, at=now
    )
    assert not audits.claim_webhook_attempt(session=session, run_id=run.id, attempts=2, at=now)  # delivered
    session.refresh(run)
    assert (run.webhook_status, run.webhook_attempts, run.webhook_error) == ("delivered", 2, None)


def test_the_queries_behind_the_recovery_of_lost_messages(session):
    audit = add_audit(session)
    now = utcnow()
    old, recent = now - timedelta(minutes=10), now - timedelta(seconds=10)
    runs = [
        audits.create_run(session=session, audit=audit, slot=f"manual:{i}", trigger="manual")
        for i in range(5)
    ]
    for run, started in zip(runs[:3], (old, recent, old), strict=True):
        audits.transition_run(
            session=session, run_id=run.id, from_status="pending", to_status="running", started_at=started
        )
    audits.update_run(session=session, run=runs[2], jobs_sent_at=old)  # its launch confirmed its sends
    assert [
        run.id
        for run in audits.list_runs_with_unsent_jobs(
            session=session, started_before=now - timedelta(minutes=5)
        )
    ] == [runs[0].id]
    for run, finished, attempt in zip(runs[3:], (old, old), (None, recent), strict=True):
        audits.transition_run(
            session=session,
            run_id=run.id,
            from_status="pending",
            to_status="finished",
            finished_at=finished,
            webhook_status="pending",
            webhook_at=attempt,
        )
    # runs[4] was attempted 10 s ago: not idle
    assert [
        run.id for run in audits.list_idle_webhooks(session=session, idle_before=now - timedelta(minutes=5))
    ] == [runs[3].id]
