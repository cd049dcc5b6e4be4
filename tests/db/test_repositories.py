"""Repositories on SQLite and PostgreSQL: versions, constraints, results, artifacts, tokens, audits."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.errors import RecordInUse
from db.models import ApiToken, Base, CamAuditRecord, SweepPoint
from db.repositories import datasets, jobs, models, results, tokens
from db.session import make_engine, make_session_factory, session_scope
from tests.support.factories import add_dataset, add_job, add_model, report_document, sha


def test_model_versions_count_up_per_name(session):
    assert [add_model(session, "resnet", f"w{i}").version for i in range(3)] == ["v1", "v2", "v3"]
    assert add_model(session, "vgg", "w9").version == "v1"
    assert (
        models.create(
            session=session,
            name="vgg",
            version="v7",
            sha256=sha("x"),
            format="torchscript",
            num_classes=2,
            input_shape=[3, 8, 8],
            storage_key=sha("x"),
            size_bytes=1,
        ).version
        == "v7"
    )
    assert models.next_version(session=session, name="vgg") == "v8"
    assert models.get_by_name(session=session, name="resnet").version == "v3"
    assert models.get_by_name(session=session, name="resnet", version="v1").sha256 == sha("w0")


def test_model_lookup_listing_and_update(session):
    first = add_model(session, "a", "same")
    add_model(session, "b", "same")
    add_model(session, "c", "other")
    assert models.find_by_sha256(session=session, sha256=sha("same")).id == first.id
    assert models.find_by_sha256(session=session, sha256=sha("nothing")) is None
    assert [m.name for m in models.list(session=session)] == ["c", "b", "a"]  # newest first
    assert [m.name for m in models.list(session=session, limit=1, offset=1)] == ["b"]
    assert models.count(session=session, sha256=sha("same")) == 2
    loaded = models.get(session=session, model_id=first.id)
    assert loaded.input_shape == [1, 10, 10] and loaded.mean == [0.5] and loaded.class_names is None
    assert loaded.created_at.tzinfo is not None and loaded.created_at.utcoffset().total_seconds() == 0
    models.update(session=session, model=loaded, arch="renamed")
    assert models.get(session=session, model_id=first.id).arch == "renamed"
    with pytest.raises(ValueError, match="no updatable field"):
        models.update(session=session, model=loaded, sha256="0" * 64)


def test_name_version_is_unique(session):
    add_model(session, "m", "1", version="v1")
    with pytest.raises(IntegrityError):
        add_model(session, "m", "2", version="v1")


def test_dataset_name_is_unique(session):
    add_dataset(session, "digits", storage_key=None)
    assert datasets.get_by_name(session=session, name="digits").storage_key is None
    with pytest.raises(IntegrityError):
        add_dataset(session, "digits")


def test_models_and_datasets_in_use_cannot_be_deleted(session):
    job = add_job(session)
    with pytest.raises(RecordInUse, match="used by 1 job"):
        models.delete(session=session, model=job.model)
    with pytest.raises(RecordInUse, match="used by 1 job"):
        datasets.delete(session=session, dataset=job.dataset)
    unused = add_model(session, "unused", "u")
    models.delete(session=session, model=unused)
    assert models.get(session=session, model_id=unused.id) is None


def test_job_listing_filters_and_pagination(session):
    model_a, model_b = add_model(session, "a", "a"), add_model(session, "b", "b")
    dataset = add_dataset(session)
    created = [add_job(session, model_a if i % 2 else model_b, dataset) for i in range(5)]
    jobs.transition(session=session, job=created[0], new_status="cancelled")
    assert [j.id for j in jobs.list(session=session)] == [j.id for j in reversed(created)]
    assert jobs.count(session=session, status="queued") == 4
    assert {j.id for j in jobs.list(session=session, status=["cancelled"])} == {created[0].id}
    assert {j.id for j in jobs.list(session=session, model_id=model_a.id)} == {created[1].id, created[3].id}
    assert [j.id for j in jobs.list(session=session, limit=2, offset=1)] == [created[3].id, created[2].id]
    assert {j.id for j in jobs.list(session=session, ids=[created[1].id, created[4].id])} == {
        created[1].id,
        created[4].id,
    }
    assert jobs.count(session=session, dataset_id=dataset.id) == 5
    job = jobs.get(session=session, job_id=created[2].id)
    assert (job.status, job.progress, job.attempts, job.cancel_requested, job.config["targeted"]) == (
        "queued",
        0.0,
        0,
        False,
        "next",
    )


def test_replace_results_twice_leaves_one_set(factory):
    with session_scope(factory) as session:
        job_id = add_job(session).id
    for _ in range(2):  # a redelivered task writes the same results again
        with session_scope(factory) as session:
            results.replace_results(
                session=session,
                job=jobs.get(session=session, job_id=job_id),
                report_document=report_document(),
            )
    with session_scope(factory) as session:
        points = results.sweep_points(session=session, job_id=job_id)
        assert len(points) == 6
        assert [(p.attack, p.eps) for p in points] == [
            ("fgsm", 0.0),
            ("fgsm", 0.1),
            ("fgsm", 0.2),
            ("targeted_fgsm", 0.0),
            ("targeted_fgsm", 0.1),
            ("targeted_fgsm", 0.2),
        ]
        assert points[3].policy == "next" and points[4].target_success_rate == pytest.approx(0.05)
        assert session.scalar(select(CamAuditRecord.drift).where(CamAuditRecord.job_id == job_id)) == 0.3
        job = jobs.get(session=session, job_id=job_id)
        assert job.report == report_document()  # exactly the document, unicode included
        assert len(job.sweep_points) == 6 and job.cam_audit.layer == "conv2"
    with session_scope(factory) as session:  # a later run without targeted / CAM drops those rows
        job = jobs.get(session=session, job_id=job_id)
        results.replace_results(
            session=session,
            job=job,
            report_document=report_document(eps=(0.0,), with_targeted=False, with_cam=False),
        )
        assert len(job.sweep_points) == 1 and job.cam_audit is None
        assert results.cam_audit(session=session, job_id=job_id) is None


def test_sweep_points_are_unique_per_job_attack_eps(session):
    job = add_job(session)
    session.add(SweepPoint(job_id=job.id, attack="fgsm", eps=0.1, accuracy=0.5))
    session.flush()
    session.add(SweepPoint(job_id=job.id, attack="fgsm", eps=0.1, accuracy=0.5))
    with pytest.raises(IntegrityError):
        session.flush()


def test_deleting_a_job_deletes_its_results(factory):
    with session_scope(factory) as session:
        job = add_job(session)
        results.replace_results(session=session, job=job, report_document=report_document())
        results.put_artifact(
            session=session,
            job=job,
            name="cam_gallery.png",
            kind="image",
            storage_key=sha("png"),
            sha256=sha("png"),
            size_bytes=10,
        )
        job_id = job.id
    with session_scope(factory) as session:
        jobs.delete(session=session, job=jobs.get(session=session, job_id=job_id))
    with session_scope(factory) as session:
        assert results.sweep_points(session=session, job_id=job_id) == []
        assert results.list_artifacts(session=session, job_id=job_id) == []
        assert not results.storage_key_in_use(session=session, storage_key=sha("png"))


def test_put_artifact_upserts_by_job_and_name(session):
    job = add_job(session)
    first = results.put_artifact(
        session=session,
        job=job,
        name="report.json",
        kind="json",
        storage_key=sha("1"),
        sha256=sha("1"),
        size_bytes=1,
    )
    second = results.put_artifact(
        session=session,
        job=job,
        name="report.json",
        kind="json",
        storage_key=sha("2"),
        sha256=sha("2"),
        size_bytes=2,
    )
    assert first.id == second.id
    assert [(a.name, a.size_bytes) for a in results.list_artifacts(session=session, job_id=job.id)] == [
        ("report.json", 2)
    ]
    assert results.storage_key_in_use(session=session, storage_key=sha("2"))
    assert not results.storage_key_in_use(session=session, storage_key=sha("1"))
    assert results.storage_key_in_use(session=session, storage_key=job.model.storage_key)


def test_architecture_audits_are_cached_per_sha_and_shape(session):
    document = {
        "input_shape": [3, 32, 32],
        "layers": [],
        "totals": {"params": 10, "macs": 2_000_000_000_000},
        "cam_head": None,
        "method": "hooks",
    }
    stored = results.store_architecture_audit(
        session=session, model_sha256=sha("m"), input_shape=(3, 32, 32), document=document
    )
    assert (stored.input_shape, stored.params, stored.macs) == ("3,32,32", 10, 2_000_000_000_000)
    again = results.store_architecture_audit(
        session=session, model_sha256=sha("m"), input_shape="3,32,32", document={"other": True}
    )
    assert again.id == stored.id and again.document == document
    assert (
        results.get_architecture_audit(session=session, model_sha256=sha("m"), input_shape=(3, 64, 64))
        is None
    )


def test_tokens_store_only_the_hash(session):
    plaintext = tokens.create_token(session=session, name="ci")
    assert len(plaintext) >= 40
    stored = session.scalar(select(ApiToken))
    assert stored.token_hash == tokens.hash_token(plaintext) and plaintext not in stored.token_hash
    assert all(plaintext not in str(value) for value in vars(stored).values())
    assert stored.last_used_at is None
    verified = tokens.verify(session=session, plaintext=plaintext)
    assert verified is not None and verified.name == "ci" and verified.last_used_at is not None
    assert tokens.verify(session=session, plaintext=plaintext[:-1] + "?") is None
    assert tokens.verify(session=session, plaintext="") is None
    assert tokens.create_token(session=session, name="other") != plaintext
    with pytest.raises(IntegrityError):
        tokens.create_token(session=session, name="ci")


def test_deleted_token_no_longer_verifies(factory):
    with session_scope(factory) as session:
        plaintext = tokens.create_token(session=session, name="temp")
    with session_scope(factory) as session:
        tokens.delete(session=session, token=tokens.get_by_name(session=session, name="temp"))
    with session_scope(factory) as session:
        assert tokens.verify(session=session, plaintext=plaintext) is None
        assert tokens.list(session=session) == []


def test_session_scope_rolls_back_on_error(factory):
    with pytest.raises(RuntimeError), session_scope(factory) as session:
        add_model(session, "rolled-back")
        raise RuntimeError("boom")
    with session_scope(factory) as session:
        assert models.count(session=session) == 0


def test_in_memory_sqlite_is_shared_across_threads():
    engine = make_engine("sqlite://")
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        add_model(session, "shared")
    seen = []

    def count_in_another_thread():
        with session_scope(factory) as session:
            seen.append(models.count(session=session))

    thread = threading.Thread(target=count_in_another_thread)
    thread.start()
    thread.join()
    assert seen == [1]
    engine.dispose()
