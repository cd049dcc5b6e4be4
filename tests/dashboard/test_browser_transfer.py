"""The transfer pages in headless chromium against `advaudit serve`: start a matrix from the form, watch the
embedded worker finish it, read the heat map through its attack and ε tabs, follow the links to the models."""

from __future__ import annotations

import re

from tests.support.browser import PageWatch, open_clean, screenshot

# The `server`, `browser` and `signed_in` fixtures live in conftest.py: one server for every browser test file.


def test_start_a_transfer_matrix_and_read_its_heat_map(signed_in, server):
    page = signed_in.new_page()
    watch = PageWatch(page)
    page.goto(f"{server.url}/transfers", wait_until="networkidle")
    assert page.locator("nav[aria-label=main] a.active").inner_text() == "Transfer"
    page.click("#new-transfer")
    page.wait_for_url(f"{server.url}/transfers/new")
    page.select_option("#dataset_id", str(server.digits["id"]))
    for model in server.models:
        page.check(f"#source_ids input[value='{model['id']}']")
        page.check(f"#target_ids input[value='{model['id']}']")
    page.fill("#eps", "0,8/255,16/255")  # 8/255: the leaderboard's ranking ε
    page.fill("#limit", "40")
    page.fill("#steps", "3")
    page.fill("#device", "cpu")
    screenshot(page, "transfer-form")
    page.click("#submit-transfer")
    page.wait_for_url(re.compile(rf"{re.escape(server.url)}/transfers/\d+$"))
    # the page reloads itself until the embedded worker is done
    page.wait_for_selector("#transfer-status:text('succeeded')", timeout=180_000)
    page.wait_for_selector("#heat-map")
    rows = page.locator("#heat-map tbody tr")
    assert rows.count() == len(server.models) + 1  # one per source and the worst case
    white = page.locator("#heat-map td.white-box")
    assert white.count() == len(server.models)
    cells = [float(text.split()[0]) for text in page.locator("#heat-map td.heat").all_inner_texts()]
    assert len(cells) == len(server.models) ** 2 + len(server.models)
    assert all(0 <= value <= 100 for value in cells)
    assert page.locator("#attack-tabs a.active").inner_text() == "fgsm"
    assert page.locator("#eps-tabs a.active").inner_text() == "ε 16/255"  # the largest ε first
    screenshot(page, "transfer-heat-map")
    page.click("#attack-tabs a:text('pgd')")
    page.wait_for_selector("#attack-tabs a.active:text('pgd')")
    pgd = [
        float(t.split()[0])
        for t in page.locator("#heat-map tbody tr:not(.worst-row) td.heat").all_inner_texts()
    ]
    page.click("#eps-tabs a:text('ε 0')")
    page.wait_for_selector("#eps-tabs a.active:text('ε 0')")
    clean = [
        float(t.split()[0])
        for t in page.locator("#heat-map tbody tr:not(.worst-row) td.heat").all_inner_texts()
    ]
    assert all(attacked <= unattacked for attacked, unattacked in zip(pgd, clean, strict=True))
    page.click("#attack-tabs a:text('worst over attacks')")
    page.wait_for_selector("#attack-tabs a.active:text('worst over attacks')")
    assert page.locator("#heat-map tbody tr").count() == 1  # the worst case over sources and attacks only
    screenshot(page, "transfer-worst-case")
    href = page.locator("#heat-map thead a").first.get_attribute("href")
    page.click("#heat-map thead a >> nth=0")
    page.wait_for_url(f"{server.url}{href}")
    watch.assert_clean("transfer pages")
    page.close()
    listing = open_clean(signed_in, f"{server.url}/transfers", "transfer-list")
    assert listing.locator("#transfers-table tbody tr[data-status=succeeded]").count() >= 1
    listing.close()
    # the leaderboard shows each model's black-box worst case next to its white-box one (the set-up's jobs,
    # ranked at 8/255: other tests run jobs on these models with ε lists that share no nonzero ε with them)
    ids = ",".join(str(job["id"]) for job in server.jobs)
    board = open_clean(signed_in, f"{server.url}/compare?job_ids={ids}", "compare-transfer")
    links = board.locator("#leaderboard td[data-role=transfer] a")
    assert links.count() == len(server.models)
    assert all(
        href.startswith("/transfers/")
        for href in links.evaluate_all("l => l.map(a => a.getAttribute('href'))")
    )
    board.close()


def test_an_incompatible_choice_comes_back_on_the_form(signed_in, server):
    page = signed_in.new_page()
    page.goto(f"{server.url}/transfers/new", wait_until="networkidle")
    page.check(f"#source_ids input[value='{server.models[0]['id']}']")
    page.fill("#eps", "0,2")  # no target either
    page.click("#submit-transfer")
    page.wait_for_selector("#form-errors")
    text = page.inner_text("#form-errors")
    assert "Targets" in text
    assert page.locator(f"#source_ids input[value='{server.models[0]['id']}']").is_checked()  # kept
    screenshot(page, "transfer-form-errors")
    page.close()
