"""The app around the endpoints: health, the task name it sends, problem+json for failures, OpenAPI."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api import broker as api_broker
from api.main import create_app
from contracts.settings import clear_settings_cache
from contracts.tasks import CONTROL_TASKS, Queue, Task
from db.session import make_engine, make_session_factory
from tests.support.api import API


def test_health_reports_database_broker_and_workers(client):
    response = client.get(f"{API}/health")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok" and health["database"]["ok"] and health["broker"]["ok"]
    assert health["workers"]["count"] == 1


def test_health_against_a_real_embedded_broker(settings, enqueue):
    with TestClient(create_app(settings, enqueue=enqueue, listen_host="127.0.0.1")) as client:
        health = client.get(f"{API}/health").json()
    assert health["database"]["ok"] and health["broker"]["ok"]
    # The SQLite transport cannot broadcast: the worker count is unknown, which is not "no workers".
    assert health["workers"]["count"] is None and "cannot ping" in health["workers"]["error"]
    assert health["status"] == "ok"


def test_health_is_503_when_the_database_is_down(client, app):
    app.state.sessions = make_session_factory(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    response = client.get(f"{API}/health")
    assert response.status_code == 503
    assert response.json()["status"] == "down" and not response.json()["database"]["ok"]


def test_an_unreachable_broker_is_reported_quickly():
    status = api_broker.CeleryBroker("redis://127.0.0.1:1/0").status()
    assert status["broker"]["ok"] is False and "Connection refused" in status["broker"]["error"]


def test_every_task_name_the_api_may_send_is_a_registered_worker_task(monkeypatch, tmp_path):
    monkeypatch.setenv("ADVAUDIT_DATA_DIR", str(tmp_path))
    clear_settings_cache()
    try:
        import worker.tasks  # noqa: F401 - registers the tasks on the worker's app
        from worker import celery_app
    finally:
        clear_settings_cache()
    assert {str(name) for name in Task} <= set(celery_app.app.tasks)
    for name in CONTROL_TASKS:  # bookkeeping never waits behind evaluations, also when sent without a queue
        assert celery_app.app.amqp.router.route({}, name)["queue"].name == Queue.CONTROL
    tick = celery_app.app.conf.beat_schedule["audit-tick"]
    assert tick["task"] == Task.AUDIT_TICK and tick["options"]["queue"] == Queue.CONTROL


def test_the_default_enqueue_sends_the_job_id_by_task_name(monkeypatch):
    sent = []
    client = api_broker.CeleryBroker("memory://")
    monkeypatch.setattr(client.app, "send_task", lambda name, **kwargs: sent.append((name, kwargs)))

    class Job:
        id, queue = 7, "gpu"

    client.send(Job())
    assert sent[0][0] == Task.EVALUATE
    assert sent[0][1]["args"] == [7] and sent[0][1]["queue"] == "gpu"
    client.launch_audit_run(5)  # the same client launches audit runs, on the control queue
    assert sent[1][0] == Task.AUDIT_LAUNCH and sent[1][1]["args"] == [5] and sent[1][1]["queue"] == "control"


def test_unexpected_errors_are_a_generic_500_problem(app):
    def explode():
        raise RuntimeError("secret internals at /srv/advaudit")

    app.add_api_route(f"{API}/explode", explode)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get(f"{API}/explode")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret" not in response.text and "Traceback" not in response.text
    assert response.json()["detail"].startswith("internal server error")


@pytest.mark.parametrize("path", ["/models/abc", "/jobs/0", "/jobs?limit=5000"])
def test_bad_parameters_are_422_problems(client, path):
    response = client.get(f"{API}{path}")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"]


def test_openapi_documents_the_endpoints_and_the_upload_forms(client):
    schema = client.get(f"{API}/openapi.json").json()
    body = schema["paths"][f"{API}/models"]["post"]["requestBody"]
    upload = body["content"]["multipart/form-data"]["schema"]
    # a file upload, or the s3:// URI of an object already in the store's bucket (register by reference)
    assert upload["properties"]["file"]["format"] == "binary" and "uri" in upload["properties"]
    assert "name" in upload["required"]
    assert "bearer" in str(schema["components"]["securitySchemes"]).lower()
    assert client.get("/docs").status_code == 200


def test_openapi_documents_the_errors_the_api_really_gives(client):
    """Every endpoint may answer 400 (a refused Host, a malformed body) and 403 (cross-site); uploads 413 / 415."""
    schema = client.get(f"{API}/openapi.json").json()
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if path.endswith("/health"):
                continue
            documented = set(operation["responses"])
            assert {"400", "403", "422", "503"} <= documented, (method, path, sorted(documented))
    for path in (f"{API}/models", f"{API}/datasets"):
        assert {"413", "415"} <= set(schema["paths"][path]["post"]["responses"])
    # and the API does answer them: a body that is neither a form nor JSON (a reference), a malformed multipart
    # body; a JSON body without its s3:// URI is a 422
    plain = client.post(f"{API}/datasets", content=b"name=x", headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    assert client.post(f"{API}/datasets", json={"name": "x"}).status_code == 422
    not_text = client.post(
        f"{API}/datasets",
        data={"name": b"\xff\xfe"},
        files={"file": ("d.npz", b"x", "application/octet-stream")},
    )
    assert not_text.status_code == 400 and not_text.headers["content-type"] == "application/problem+json"
    assert client.get(f"{API}/models", headers={"Host": "rebound.example"}).status_code == 400
