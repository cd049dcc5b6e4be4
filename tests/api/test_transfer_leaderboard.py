"""The leaderboard shows a model's black-box (transfer) worst case next to its white-box worst case."""

from __future__ import annotations

from db import repositories as repo
from db.session import session_scope
from services.job_states import SUCCEEDED
from tests.api.test_leaderboard import EPS, v2_report
from tests.support import factories
from tests.support.api import API


def _worst(target_id: int, eps: float, accuracy: float) -> dict:
    return {
        "source_model_id": None,
        "target_model_id": target_id,
        "attack": "all",
        "eps": eps,
        "accuracy": accuracy,
        "success_rate": 0.5,
        "n": 10,
    }


def test_transfer_accuracy_at_the_ranking_eps_from_the_newest_succeeded_transfer(app, client):
    with session_scope(app.state.sessions) as session:
        dataset = factories.add_dataset(session, name="board")
        models, job_ids = [], []
        for name in ("a", "b"):
            model = factories.add_model(session, name=name, content=name)
            job = factories.add_job(session, model=model, dataset=dataset)
            job.status, job.progress, job.report = SUCCEEDED, 1.0, v2_report()
            models.append(model)
            job_ids.append(job.id)
        transfer = repo.transfers.create(
            session=session,
            dataset_id=dataset.id,
            source_ids=[m.id for m in models],
            target_ids=[models[0].id],
            config={},
        )
        repo.transfers.replace_points(
            session=session,
            transfer_job=transfer,
            points=[_worst(models[0].id, 8 / 255, 0.625), _worst(models[0].id, 4 / 255, 0.75)],
        )
        transfer.status = SUCCEEDED
        session.flush()
        a_id, transfer_id = models[0].id, transfer.id
    answer = client.get(f"{API}/compare", params={"job_ids": ",".join(map(str, job_ids))}).json()
    rows = {row["model_id"]: row for row in answer["rows"]}
    assert rows[a_id]["transfer_accuracy"] == 0.625 and rows[a_id]["transfer_job_id"] == transfer_id
    assert rows[a_id]["ranking_accuracy"] == v2_report()["summary"]["worst_case_accuracy"][EPS.index(8 / 255)]
    other = next(row for key, row in rows.items() if key != a_id)
    assert other["transfer_accuracy"] is None and other["transfer_job_id"] is None
    page = client.get("/compare", params={"job_ids": ",".join(map(str, job_ids))})
    assert f'<a href="/transfers/{transfer_id}">62.5 %</a>' in page.text
