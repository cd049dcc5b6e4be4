"""`advaudit transfer`: in-process with --local, and against a server (the API app in-process, the job run by
the worker code as the broker would have it run); refusals are one line and exit code 2."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from advaudit import transfer_cli
from advaudit.cli import main
from advaudit.client import Client
from api.main import create_app
from contracts.settings import Settings
from tests.support import api as helpers
from tests.support.transfers import run_transfer

LOCAL = ["transfer", "--local", "--dataset", "digits", "--limit", "16", "--eps", "0,8/255", "--steps", "2"]


def test_local_run_prints_the_matrix_per_attack(capsys):
    argv = [*LOCAL, "--source", "demo:gap-cnn", "--source", "demo:separable-cnn", "--target", "demo:gap-cnn"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for title in (
        "fgsm: target accuracy % at ε = 0, 8/255",
        "pgd: target accuracy %",
        "all: target accuracy",
    ):
        assert title in out
    assert "demo:separable-cnn" in out and "worst over the other sources" in out
    assert "*" in out  # the white-box cell of demo:gap-cnn


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "demo:gap-cnn", "--target", "demo:gap-cnn", "--eps", "0,4"], "outside [0, 1]"),
        (["--source", "demo:gap-cnn", "--target", "demo:gap-cnn", "--attacks", "bim"], "unknown attacks bim"),
        (["--target", "demo:gap-cnn"], "at least one source"),
        (["--source", "demo:gap-cnn", "--source", "demo:gap-cnn", "--target", "demo:gap-cnn"], "given twice"),
        (["--source", "demo:nope", "--target", "demo:gap-cnn"], "nope"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, extra, message):
    assert main([*LOCAL, *extra]) == 2
    out = capsys.readouterr().out
    assert out.startswith("error:") and out.count("error:") == 1
    assert message in " ".join(out.split())  # one message (the console may wrap it)


def test_against_a_server_by_model_names(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, auth="off", allowed_hosts=["testserver"])
    holder = {}
    app = create_app(
        settings,
        listen_host="127.0.0.1",
        enqueue_transfer=lambda job: holder.setdefault("ids", []).append(job.id),
    )
    with TestClient(app) as http:
        dataset = helpers.upload_dataset(http, "tiny", helpers.npz_bytes()).json()
        for name, file in (("gap", "gap-cnn"), ("sep", "separable-cnn")):
            response = helpers.upload_model(
                http, name, helpers.demo_bytes(file), f"{file}.pt", dataset_id=dataset["id"]
            )
            assert response.status_code == 201, response.text

        class InProcess(Client):
            def __init__(self, server, token):
                super().__init__(server, token)
                self.http = TestClient(app, base_url="http://testserver/api/v1")

            def request(self, method, path, **kwargs):
                answer = super().request(method, path, **kwargs)
                if method == "POST" and path == "/transfer":  # the worker takes the job at once
                    assert run_transfer(app, answer["id"]) == "succeeded"
                return answer

        monkeypatch.setattr(transfer_cli, "Client", InProcess)
        argv = ["transfer", "--dataset", "tiny", "--source", "gap", "--source", "sep", "--target", "sep"]
        assert main([*argv, "--eps", "0,8/255", "--steps", "2"]) == 0
        out = capsys.readouterr().out
        assert "transfer job 1 queued" in out and "pgd: target accuracy % at ε = 0, 8/255" in out
        assert holder["ids"] == [1]
        assert main(["transfer", "--dataset", "tiny", "--source", "nobody", "--target", "sep"]) == 2
        assert "no model named 'nobody'" in capsys.readouterr().out


def test_every_surface_offers_exactly_the_declared_transfer_options():
    from advaudit.cli import build_parser
    from api.transfer_schemas import TransferJobConfig
    from services.transfer_specs import TRANSFER_OPTIONS, TransferConfig

    names = [option.name for option in TRANSFER_OPTIONS]
    assert list(TransferJobConfig.model_fields) == names
    parser = build_parser()
    args = parser.parse_args(["transfer", "--dataset", "d", "--source", "a", "--target", "b"])
    assert all(hasattr(args, name) for name in names)
    flags = {
        action.option_strings[0]
        for action in parser._subparsers._group_actions[0].choices["transfer"]._actions
        if action.option_strings
    }
    assert {option.flag for option in TRANSFER_OPTIONS} <= flags
    from advaudit.options import config_from_args

    assert config_from_args(args, TRANSFER_OPTIONS, TransferConfig) == TransferConfig()
    assert TransferConfig(**TransferJobConfig().evaluation_options()) == TransferConfig()
