"""The leaderboard ranks by worst-case accuracy at an ε every job swept, flags suspicious jobs, reads v1 reports.

Jobs here are rows with hand-written report documents (no evaluation runs), so each ranking rule is exact.
"""

from __future__ import annotations

import pytest

from db.session import session_scope
from services import metrics
from services.job_states import SUCCEEDED
from tests.support import factories
from tests.support.api import API

EPS = (0.0, 4 / 255, 8 / 255, 16 / 255)


def v1_report(eps=EPS, accuracy=(0.9, 0.7, 0.5, 0.2), auc=0.55) -> dict:
    """A version 1 document: FGSM only, no worst case, no sanity section."""
    return {
        "schema_version": 1,
        "fgsm": [
            {"eps": e, "eps_255": e * 255, "accuracy": a, "attack_success_rate": 1 - a}
            for e, a in zip(eps, accuracy, strict=True)
        ],
        "targeted_fgsm": None,
        "summary": {"clean_accuracy": accuracy[0], "robust_auc": auc, "macs": 1000, "params": 10},
    }


def v2_report(eps=EPS, fgsm=(0.9, 0.7, 0.5, 0.2), worst=(0.9, 0.5, 0.3, 0.0), failed=()) -> dict:
    document = v1_report(eps, fgsm)
    verdict = "suspicious" if failed else "passed"
    document["schema_version"] = 2
    document["robust"] = {
        "attacks": ["fgsm", "pgd"],
        "points": [{"eps": e, "eps_255": e * 255, "accuracy": a} for e, a in zip(eps, worst, strict=True)],
    }
    document["sanity"] = {
        "verdict": verdict,
        "checks": [
            {"name": name, "status": "failed" if name in failed else "passed", "detail": f"{name} numbers"}
            for name in ("gradients_usable", "outputs_are_logits")
        ],
    }
    document["summary"] |= {
        "worst_case_accuracy": list(worst),
        "worst_case_auc": metrics.robust_auc(eps, worst),
        "worst_case_attacks": ["fgsm", "pgd"],
        "sanity_verdict": verdict,
    }
    return document


@pytest.fixture
def add_jobs(app):
    """add_jobs(("name", document), …) → their job ids: succeeded jobs of distinct models on one dataset."""

    def add(*entries) -> list[int]:
        with session_scope(app.state.sessions) as session:
            dataset = factories.add_dataset(session, name="board")
            ids = []
            for name, document in entries:
                model = factories.add_model(session, name=name, content=name)
                job = factories.add_job(session, model=model, dataset=dataset)
                job.status, job.progress, job.report = SUCCEEDED, 1.0, document
                session.flush()
                ids.append(job.id)
            return ids

    return add


def board(client, ids: list[int]) -> dict:
    response = client.get(f"{API}/compare", params={"job_ids": ",".join(map(str, ids))})
    assert response.status_code == 200, response.text
    return response.json()


def test_rank_by_worst_case_accuracy_at_8_over_255_not_by_the_reports_own_auc(client, add_jobs):
    # "fgsm-strong" has the best FGSM AUC, "robust" the best worst case at 8/255.
    ids = add_jobs(
        ("fgsm-strong", v2_report(fgsm=(0.9, 0.9, 0.9, 0.9), worst=(0.9, 0.6, 0.1, 0.0))),
        ("robust", v2_report(fgsm=(0.9, 0.6, 0.4, 0.3), worst=(0.9, 0.5, 0.4, 0.2))),
    )
    answer = board(client, ids)
    assert answer["ranking_eps"] == pytest.approx(8 / 255) and answer["ranking_eps_255"] == pytest.approx(8)
    assert answer["ranked_by"] == "worst-case accuracy at ε = 8/255, suspicious jobs last"
    assert [row["model_name"] for row in answer["rows"]] == ["robust", "fgsm-strong"]
    top = answer["rows"][0]
    assert top["ranking_accuracy"] == 0.4 and top["worst_case_accuracy"] == [0.9, 0.5, 0.4, 0.2]
    assert top["accuracy"] == [0.9, 0.6, 0.4, 0.3]  # the FGSM columns are still there
    assert top["worst_case_auc"] == pytest.approx(metrics.robust_auc(EPS, (0.9, 0.5, 0.4, 0.2)))
    assert top["worst_case_source"] == "worst case over fgsm, pgd" and top["sanity_verdict"] == "passed"
    assert answer["warnings"] == []


def test_different_eps_lists_rank_on_the_shared_grid_and_auc_spans_it_only(client, add_jobs):
    short = (0.0, 4 / 255, 8 / 255)
    long = (0.0, 4 / 255, 8 / 255, 16 / 255, 32 / 255)
    ids = add_jobs(
        ("short", v2_report(eps=short, fgsm=(0.9, 0.8, 0.7), worst=(0.9, 0.5, 0.3))),
        ("long", v2_report(eps=long, fgsm=(0.9, 0.8, 0.7, 0.5, 0.3), worst=(0.9, 0.6, 0.4, 0.0, 0.0))),
    )
    answer = board(client, ids)
    assert answer["shared_eps"] == pytest.approx(list(short)) and answer["eps"] == pytest.approx(list(long))
    assert answer["ranking_eps"] == pytest.approx(8 / 255)
    rows = {row["model_name"]: row for row in answer["rows"]}
    # over its own range "long" averages in its zeros at 16 and 32/255; on the shared grid it does not
    assert rows["long"]["worst_case_auc"] == pytest.approx(metrics.robust_auc(short, (0.9, 0.6, 0.4)))
    assert rows["long"]["fgsm_auc"] == pytest.approx(metrics.robust_auc(short, (0.9, 0.8, 0.7)))
    own_range = metrics.robust_auc(long, (0.9, 0.6, 0.4, 0.0, 0.0))
    assert rows["long"]["worst_case_auc"] > own_range + 0.1
    assert [row["model_name"] for row in answer["rows"]] == ["long", "short"]
    assert rows["short"]["worst_case_accuracy"][3:] == [None, None]
    assert "ranked on the ε values all of them swept (0/255, 4/255, 8/255)" in answer["warnings"][0]
    assert "shared grid" in answer["warnings"][0]


def test_without_8_over_255_the_largest_shared_nonzero_eps_ranks(client, add_jobs):
    a = (0.0, 2 / 255, 6 / 255, 16 / 255)
    b = (0.0, 2 / 255, 6 / 255)
    ids = add_jobs(
        ("a", v2_report(eps=a, fgsm=(0.9, 0.8, 0.7, 0.1), worst=(0.9, 0.7, 0.2, 0.0))),
        ("b", v2_report(eps=b, fgsm=(0.9, 0.8, 0.7), worst=(0.9, 0.6, 0.3))),
    )
    answer = board(client, ids)
    assert answer["ranking_eps"] == pytest.approx(6 / 255)
    assert answer["ranked_by"] == "worst-case accuracy at ε = 6/255, suspicious jobs last"
    assert [row["model_name"] for row in answer["rows"]] == ["b", "a"]


def test_a_suspicious_job_is_flagged_with_its_failed_checks(client, add_jobs):
    ids = add_jobs(
        ("masked", v2_report(worst=(0.9, 0.9, 0.9, 0.9), failed=("outputs_are_logits",))),
        ("honest", v2_report()),
    )
    answer = board(client, ids)
    rows = {row["model_name"]: row for row in answer["rows"]}
    masked = rows["masked"]
    assert masked["sanity_verdict"] == "suspicious" and rows["honest"]["sanity_verdict"] == "passed"
    assert [check["name"] for check in masked["failed_checks"]] == ["outputs_are_logits"]
    check = masked["failed_checks"][0]
    assert check["title"] == "Outputs are logits" and check["detail"] == "outputs_are_logits numbers"
    assert "cross-entropy gradient vanishes" in check["meaning"]
    assert masked["flag"].startswith("suspicious: Outputs are logits failed — ")
    assert rows["honest"]["flag"] is None
    assert any(f"job {masked['job_id']} (masked v1) is suspicious" in w for w in answer["warnings"])
    # its (masked) numbers are the best on the board, yet it is ranked after the honest job
    assert [row["model_name"] for row in answer["rows"]] == ["honest", "masked"]
    assert answer["ranked_by"].endswith("suspicious jobs last")


def test_v1_reports_rank_by_their_fgsm_accuracy_and_say_so(client, add_jobs):
    ids = add_jobs(
        ("old", v1_report(accuracy=(0.9, 0.8, 0.6, 0.3))),
        ("new", v2_report(fgsm=(0.9, 0.8, 0.7, 0.5), worst=(0.9, 0.5, 0.3, 0.1))),
    )
    answer = board(client, ids)
    rows = {row["model_name"]: row for row in answer["rows"]}
    old = rows["old"]
    assert old["report_version"] == 1 and old["sanity_verdict"] is None and old["failed_checks"] == []
    assert old["worst_case_accuracy"] == [0.9, 0.8, 0.6, 0.3] and old["ranking_accuracy"] == 0.6
    assert old["worst_case_source"] == "FGSM only (report v1)"
    assert [row["model_name"] for row in answer["rows"]] == ["old", "new"]
    assert any("version 1 report: FGSM only (report v1)" in warning for warning in answer["warnings"])


def test_the_openapi_schema_documents_the_ranking(client):
    schema = client.get(f"{API}/openapi.json").json()["components"]["schemas"]
    assert "ranking_eps" in schema["CompareRead"]["required"]
    assert "8/255" in schema["CompareRead"]["properties"]["ranking_eps"]["description"]
    row = schema["CompareRow"]["properties"]
    for key in ("sanity_verdict", "worst_case_accuracy", "ranking_accuracy", "worst_case_auc", "flag"):
        assert "description" in row[key], key
