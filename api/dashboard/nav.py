"""The dashboard's navigation bar: the one list a new page adds its link to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NavLink:
    """A link of the top bar; it is highlighted on every page whose path starts with `section`."""

    label: str
    path: str
    section: str


# A new page = a router included in api.dashboard.install() + one NavLink here (order = order on screen).
NAV_LINKS: list[NavLink] = [
    NavLink("Overview", "/", "/"),
    NavLink("New evaluation", "/evaluations/new", "/evaluations"),
    NavLink("Compare", "/compare", "/compare"),
    NavLink("Transfer", "/transfers", "/transfers"),
    NavLink("Audits", "/audits", "/audits"),
]


def active_link(path: str) -> NavLink | None:
    """The link whose section is the longest prefix of `path` ("/" only matches the home page)."""
    matches = [
        link
        for link in NAV_LINKS
        if path == link.section or (link.section != "/" and path.startswith(link.section))
    ]
    return max(matches, key=lambda link: len(link.section), default=None)
