"""`advaudit models add` / `datasets add` take an s3:// URI in place of a file: registered by reference."""

from __future__ import annotations

from advaudit import client as cli_client


def test_an_s3_uri_is_sent_as_a_reference_not_opened_as_a_file(monkeypatch):
    sent = []

    def request(self, method, path, **kwargs):
        sent.append((method, path, kwargs))
        return {"id": 1, "name": "big", "num_samples": 5, "input_shape": [1, 8, 8], "sha256": "ab" * 32}

    monkeypatch.setattr(cli_client.Client, "request", request)
    parser_args = ["datasets", "add", "s3://bucket/imports/big.npz", "--name", "big", "--image-size", "8"]
    from advaudit.cli import build_parser

    args = build_parser().parse_args(parser_args)
    assert args.handler(args) == 0
    assert sent == [
        (
            "POST",
            "/datasets",
            {"json": {"name": "big", "image_size": 8, "uri": "s3://bucket/imports/big.npz"}},
        )
    ]
