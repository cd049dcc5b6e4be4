"""DNS rebinding: with auth off the server answers only the host names it expects."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.hosts import host_name, host_policy
from api.main import create_app
from tests.support.api import API, FakeBroker, demo_bytes

REBOUND = "attacker.example:8000"
# What a page on attacker.example sends once its name resolves to 127.0.0.1: a same-origin request.
REBINDING_PAGE = {"Host": REBOUND, "Origin": f"http://{REBOUND}", "Sec-Fetch-Site": "same-origin"}


def _client(
    settings, enqueue, *, auth: str = "off", allowed: list[str] = (), listen_host: str = "127.0.0.1"
) -> TestClient:
    settings = settings.model_copy(update={"auth": auth, "allowed_hosts": list(allowed)})
    return TestClient(
        create_app(settings, enqueue=enqueue, broker=FakeBroker(), listen_host=listen_host),
        base_url="http://127.0.0.1:8000",
    )


def _refused(response) -> bool:
    return (
        response.status_code == 400
        and response.headers["content-type"] == "application/problem+json"
        and "DNS rebinding" in response.json()["detail"]
    )


def test_a_rebinding_page_can_neither_read_nor_change_anything(settings, enqueue):
    with _client(settings, enqueue) as client:
        assert _refused(client.get(f"{API}/models", headers=REBINDING_PAGE))
        upload = client.post(
            f"{API}/models",
            headers=REBINDING_PAGE,
            data={"name": "m"},
            files={"file": ("m.pt", demo_bytes("gap-cnn"), "application/octet-stream")},
        )
        assert _refused(upload)
        assert _refused(
            client.post(f"{API}/jobs", headers=REBINDING_PAGE, json={"model_id": 1, "dataset_id": 1})
        )
        assert _refused(
            client.post("/evaluations/new", headers=REBINDING_PAGE, data={"model_id": "1", "dataset_id": "1"})
        )
        assert _refused(client.get("/", headers=REBINDING_PAGE))
        assert _refused(client.get(f"{API}/health", headers=REBINDING_PAGE))
        # nothing was stored by the refused upload
        assert client.get(f"{API}/models").json()["count"] == 0


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "127.0.0.2", "LOCALHOST"])
def test_loopback_names_pass(settings, enqueue, host):
    with _client(settings, enqueue) as client:
        assert client.get(f"{API}/models", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "",
        "attacker.example",
        "127.0.0.1.attacker.example",
        "localhost.",
        "evil@127.0.0.1",
        "127.0.0.1:notaport",
        "127.0.0.1:99999",
    ],
)
def test_other_or_malformed_hosts_are_refused(settings, enqueue, host):
    with _client(settings, enqueue) as client:
        assert _refused(client.get(f"{API}/models", headers={"Host": host}))


def test_operator_names_and_wildcards(settings, enqueue):
    with _client(settings, enqueue, allowed=["advaudit.lab.example", "*.internal.example"]) as client:
        for host in (
            "advaudit.lab.example",
            "ADVAUDIT.lab.example:8000",
            "gpu1.internal.example",
            "127.0.0.1:8000",
        ):
            assert client.get(f"{API}/models", headers={"Host": host}).status_code == 200, host
        for host in ("internal.example", "lab.example", REBOUND):
            assert _refused(client.get(f"{API}/models", headers={"Host": host})), host


def test_the_listen_address_is_allowed(settings, enqueue):
    with _client(settings, enqueue, listen_host="192.168.7.20") as client:  # auth off on a LAN address
        assert client.get(f"{API}/models", headers={"Host": "192.168.7.20:8000"}).status_code == 200
        assert _refused(client.get(f"{API}/models", headers={"Host": REBOUND}))


def test_with_auth_on_and_no_list_any_host_may_ask_but_needs_a_token(settings, enqueue):
    # A rebinding page cannot send the user's token: the browser scopes the cookie to the real host name.
    with _client(settings, enqueue, auth="required", listen_host="0.0.0.0") as client:
        response = client.get(f"{API}/models", headers=REBINDING_PAGE)
        assert response.status_code == 401


def test_with_auth_on_a_configured_list_is_enforced(settings, enqueue):
    with _client(
        settings, enqueue, auth="required", allowed=["advaudit.example"], listen_host="0.0.0.0"
    ) as client:
        assert _refused(client.get(f"{API}/models", headers=REBINDING_PAGE))
        assert client.get(f"{API}/models", headers={"Host": "advaudit.example"}).status_code == 401


def test_env_list_is_comma_separated(monkeypatch, tmp_path):
    from contracts.settings import Settings

    monkeypatch.setenv("ADVAUDIT_ALLOWED_HOSTS", " a.example, *.b.example ,,")
    assert Settings(data_dir=tmp_path).allowed_hosts == ["a.example", "*.b.example"]


def test_host_names_are_parsed_strictly():
    assert host_name("[::1]:8000") == "::1"
    assert host_name("Example.ORG") == "example.org"
    assert host_name("a b") is None and host_name("x/y") is None and host_name(":80") is None
    loopback_only = host_policy(auth_required=False, allowed_hosts=[], listen_host="0.0.0.0")
    assert not loopback_only.allows(None)  # an HTTP/1.0 request without a Host header
    assert not loopback_only.allows("0.0.0.0")  # a wildcard listen address is not a name to answer
    assert host_policy(auth_required=False, allowed_hosts=["*"], listen_host=None).allows("anything")
