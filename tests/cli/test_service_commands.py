"""`advaudit serve` and `advaudit worker`: which queues their workers consume (control included)."""

from __future__ import annotations

import sqlite3

import uvicorn

from advaudit import service
from advaudit.cli import build_parser, main
from contracts.settings import clear_settings_cache


def test_serve_runs_an_evaluation_worker_and_a_control_worker_with_beat(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVAUDIT_DATA_DIR", str(tmp_path))  # restored after: serve sets it for its children
    started = []

    class Supervised:
        def __init__(self, command, log, env, lifeline) -> None:
            started.append((command, lifeline))

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

    monkeypatch.setattr(service, "SupervisedWorker", Supervised)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    try:
        assert main(["serve", "--data-dir", str(tmp_path), "--port", "1"]) == 0
    finally:
        clear_settings_cache()
    lifelines = {id(lifeline) for _, lifeline in started}
    assert len(lifelines) == 1 and started[0][1] is not None  # both workers die with serve, by one pipe
    started = [command for command, _ in started]
    assert ["--pool=prefork" in command for command in started] == [
        True,
        False,
    ]  # the evaluations' is killable
    queues = [
        next(arg for arg in command if arg.startswith("--queues=")).removeprefix("--queues=")
        for command in started
    ]
    assert queues == ["evaluations,gpu", "control"]  # a running evaluation never holds up the bookkeeping
    assert ["--beat" in command for command in started] == [False, True]  # one beat, in the control worker
    names = [next(arg for arg in command if arg.startswith("--hostname=")) for command in started]
    assert len(set(names)) == 2
    with sqlite3.connect(tmp_path / "broker.db") as broker:  # declared before the worker starts
        assert {"control", "evaluations", "gpu"} <= {
            name for (name,) in broker.execute("SELECT name FROM kombu_queue")
        }


def test_a_worker_takes_the_control_queue_by_default():
    assert set(build_parser().parse_args(["worker"]).queues.split(",")) == {"evaluations", "control"}
    assert "control" in service.DEFAULT_WORKER_QUEUES
