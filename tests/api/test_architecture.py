"""GET /models/{id}/architecture and /filters.png: made at registration, cached per sha256, rebuilt if missing."""

from __future__ import annotations

from db import repositories as repo
from db.session import session_scope
from services.architecture import audit_architecture
from services.checkpoints import load_model
from tests.support import api as helpers
from tests.support.api import API

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _register(client, name: str = "sep", demo: str = "separable-cnn") -> dict:
    response = helpers.upload_model(
        client, name, helpers.demo_bytes(demo), f"{demo}.pt", input_shape="1,32,32"
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_registration_keeps_the_audit_the_engine_would_compute(client, app):
    model = _register(client)
    with session_scope(app.state.sessions) as session:
        cached = repo.results.get_architecture_audit(
            session=session, model_sha256=model["sha256"], input_shape=[1, 32, 32]
        )
        assert cached is not None, "the audit must be stored when the model is registered"
    response = client.get(f"{API}/models/{model['id']}/architecture")
    assert response.status_code == 200, response.text
    document = response.json()
    loaded = load_model(helpers.demo_model_path("separable-cnn"), input_shape=(1, 32, 32))
    expected = audit_architecture(loaded.network, (1, 32, 32), exported=loaded.exported).to_dict()
    assert document == expected
    kinds = {layer["kind"] for layer in document["layers"]}
    assert "depthwise" in kinds and "pointwise" in kinds, kinds
    assert document["totals"]["macs"] > 0 and document["totals"]["params"] > 0


def test_filter_grid_is_a_png_of_the_first_layer(client):
    model = _register(client)
    response = client.get(f"{API}/models/{model['id']}/filters.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_MAGIC) and len(response.content) > 500


def test_a_model_registered_without_an_audit_gets_one_on_first_view(client, app):
    model = _register(client, "gap", "gap-cnn")
    with session_scope(app.state.sessions) as session:  # as for a model registered by an older version
        record = repo.results.get_architecture_audit(
            session=session, model_sha256=model["sha256"], input_shape=[1, 32, 32]
        )
        session.delete(record)
    response = client.get(f"{API}/models/{model['id']}/architecture")
    assert response.status_code == 200, response.text
    assert [layer["name"] for layer in response.json()["layers"]][:1] == ["features.0"]
    assert client.get(f"{API}/models/{model['id']}/filters.png").content.startswith(PNG_MAGIC)


def test_unknown_model_is_a_404_problem(client):
    for path in ("architecture", "filters.png"):
        response = client.get(f"{API}/models/999/{path}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
