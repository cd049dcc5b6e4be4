"""Bearer-token auth: required / auto (by listen address) / off; /health is always open."""

from __future__ import annotations

import pytest

from api.hosts import is_loopback
from api.main import auth_required
from db import repositories as repo
from db.session import session_scope
from tests.support.api import API, auth_client, make_token


@pytest.mark.parametrize(
    ("mode", "host", "required"),
    [
        ("required", "127.0.0.1", True),
        ("auto", "0.0.0.0", True),
        ("auto", "::", True),
        ("auto", "192.168.1.5", True),
        ("auto", None, True),
        ("auto", "127.0.0.1", False),
        ("auto", "localhost", False),
        ("auto", "::1", False),
        ("off", "0.0.0.0", False),
    ],
)
def test_when_auth_is_required(mode, host, required):
    assert auth_required(mode, host) is required


def test_loopback_detection():
    assert is_loopback("127.0.0.2") and is_loopback("[::1]") and not is_loopback("example.org")


@pytest.mark.parametrize(("mode", "host"), [("required", "127.0.0.1"), ("auto", "0.0.0.0")])
def test_without_a_valid_token_every_endpoint_but_health_is_401(settings, enqueue, mode, host):
    with auth_client(settings, enqueue, mode, host) as client:
        for method, path in [
            ("get", "/models"),
            ("get", "/models/1"),
            ("delete", "/models/1"),
            ("get", "/datasets"),
            ("post", "/datasets"),
            ("post", "/models"),
            ("get", "/jobs"),
            ("post", "/jobs"),
            ("post", "/jobs/1/cancel"),
            ("get", "/jobs/1/report"),
            ("get", "/jobs/1/artifacts/report.json"),
            ("get", "/compare?job_ids=1"),
        ]:
            response = getattr(client, method)(f"{API}{path}")
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.headers["content-type"] == "application/problem+json"
            assert "Bearer" in response.json()["detail"]
        wrong = client.get(f"{API}/models", headers={"Authorization": "Bearer not-a-token"})
        assert wrong.status_code == 401 and "invalid" in wrong.json()["detail"]
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        assert client.get(f"{API}/health").status_code == 200
        token = make_token(client)
        ok = client.get(f"{API}/models", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        with session_scope(client.app.state.sessions) as session:
            assert repo.tokens.get_by_name(session=session, name="ci").last_used_at is not None


@pytest.mark.parametrize(("mode", "host"), [("off", "0.0.0.0"), ("auto", "127.0.0.1")])
def test_no_token_needed_when_auth_is_off_or_local(settings, enqueue, mode, host):
    with auth_client(settings, enqueue, mode, host) as client:
        assert client.get(f"{API}/models").status_code == 200
        assert client.get(f"{API}/health").json()["auth_required"] is False
