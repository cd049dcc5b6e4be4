"""State-changing API requests from a page of another site are refused (CSRF), whatever carries the auth."""

from __future__ import annotations

import pytest

from api.deps import TOKEN_COOKIE
from tests.support.api import API, auth_client, make_token

CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://evil.localhost:3000"},  # a sibling subdomain or port
    {"Origin": "http://evil.example"},  # a browser that sends Origin only
    {"Origin": "null"},  # a sandboxed frame or a file:// page
]
SAME_ORIGIN = [
    {},
    {"Sec-Fetch-Site": "same-origin"},
    {"Origin": "http://testserver"},
    {"Sec-Fetch-Site": "none"},
]


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_cross_site_posts_are_refused_even_with_the_cookie(settings, enqueue, headers):
    with auth_client(settings, enqueue, "required", "127.0.0.1") as client:
        client.cookies.set(TOKEN_COOKIE, make_token(client))
        for path in ("/jobs/999/cancel", "/jobs/999/rerun", "/jobs", "/models", "/datasets"):
            response = client.post(f"{API}{path}", headers=headers)
            assert response.status_code == 403, (path, headers, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert "cross-site" in response.json()["detail"]
        assert client.delete(f"{API}/models/999", headers=headers).status_code == 403


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_cross_site_posts_are_refused_when_auth_is_off(client, headers):
    # a loopback server without auth: any web page the user visits could otherwise queue jobs on it
    assert client.post(f"{API}/jobs/999/cancel", headers=headers).status_code == 403


@pytest.mark.parametrize("headers", SAME_ORIGIN)
def test_own_pages_and_non_browser_clients_pass(client, headers):
    # past the check, to the real answer: the job does not exist
    assert client.post(f"{API}/jobs/999/cancel", headers=headers).status_code == 404


def test_reads_from_other_sites_are_not_refused(client):
    # a GET changes nothing; the browser's same-origin policy keeps the answer from the other page
    assert client.get(f"{API}/models", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
