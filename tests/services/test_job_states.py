"""The transition table (pure: no database)."""

import itertools

import pytest

from services.errors import AdvauditError
from services.job_states import (
    STATUSES,
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    can_transition,
    check_transition,
)

ALLOWED = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "failed"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "queued"),
}


def test_the_table_is_exactly_the_documented_one():
    assert {(old, new) for old, targets in TRANSITIONS.items() for new in targets} == ALLOWED
    assert set(STATUSES) == {"queued", "running", "succeeded", "failed", "cancelled"}
    assert {"succeeded", "failed", "cancelled"} == TERMINAL


@pytest.mark.parametrize(("old", "new"), sorted(itertools.product(STATUSES, STATUSES)))
def test_check_transition_allows_only_the_table(old, new):
    assert can_transition(old, new) == ((old, new) in ALLOWED)
    if (old, new) in ALLOWED:
        check_transition(old, new)
    else:
        with pytest.raises(InvalidTransition):
            check_transition(old, new)


def test_messages_say_what_to_do():
    with pytest.raises(InvalidTransition, match="already failed and cannot become queued; rerun it"):
        check_transition("failed", "queued")
    with pytest.raises(
        InvalidTransition, match="a queued job cannot become succeeded; .*cancelled, failed, running"
    ):
        check_transition("queued", "succeeded")
    with pytest.raises(InvalidTransition, match="unknown job status 'done'"):
        check_transition("running", "done")
    assert issubclass(InvalidTransition, AdvauditError)
