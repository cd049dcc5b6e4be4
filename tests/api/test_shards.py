"""The shards option at submission (422 with the reason, nothing written), a job's shards, the job page."""

from __future__ import annotations

import pytest

from db import repositories as repo
from db.session import session_scope
from tests.support.api import API


def _submit(client, model, dataset, **config):
    body = {"model_id": model["id"], "dataset_id": dataset["id"], "config": config}
    return client.post(f"{API}/jobs", json=body)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"shards": 0}, "greater than or equal to 1"),
        ({"shards": "two"}, "shards"),
        ({"shards": 17}, "more than the 16 samples"),
        ({"shards": 4, "limit": 3}, "more than the 3 samples"),
        ({"shards": 3, "batch_size": 8}, "at most 2"),
    ],
)
def test_a_shard_count_the_samples_cannot_be_cut_into_is_422_and_writes_nothing(
    client, app, gap_model, npz_dataset, enqueue, config, reason
):
    response = _submit(client, gap_model, npz_dataset, **config)
    assert response.status_code == 422, response.text
    assert reason in response.text
    assert enqueue.job_ids == []
    with session_scope(app.state.sessions) as session:
        assert repo.jobs.count(session=session) == 0


def test_a_sharded_job_lists_its_shards_with_their_workers(client, app, gap_model, npz_dataset):
    job = _submit(client, gap_model, npz_dataset, shards=2, batch_size=8).json()
    assert job["config"]["shards"] == 2 and (job["shards_total"], job["shards_done"]) == (None, 0)
    assert client.get(f"{API}/jobs/{job['id']}/shards").json() == []
    with session_scope(app.state.sessions) as session:  # what the worker that claims it does
        row = repo.jobs.get(session=session, job_id=job["id"])
        repo.jobs.claim(session=session, job_id=row.id, worker_host="coordinator")
        repo.shards.create(session=session, job=row, ranges=[(0, 8), (8, 16)])
        repo.shards.claim(session=session, job_id=row.id, shard_index=1, worker_host="gpu-7:42")
    read = client.get(f"{API}/jobs/{job['id']}").json()
    assert (read["shards_total"], read["shards_done"]) == (2, 0)
    shards = client.get(f"{API}/jobs/{job['id']}/shards").json()
    assert [
        (s["shard_index"], s["sample_start"], s["sample_stop"], s["status"], s["worker_host"]) for s in shards
    ] == [
        (0, 0, 8, "queued", None),
        (1, 8, 16, "running", "gpu-7:42"),
    ]
    page = client.get(f"/jobs/{job['id']}")
    assert page.status_code == 200
    assert 'id="job-shards"' in page.text and "gpu-7:42" in page.text and "0 of 2 done" in page.text
    assert "8–15" in page.text


def test_a_job_in_one_piece_shows_no_shards(client, gap_model, npz_dataset):
    job = _submit(client, gap_model, npz_dataset).json()
    assert 'id="job-shards"' not in client.get(f"/jobs/{job['id']}").text
