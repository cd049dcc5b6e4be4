"""Small builders for database tests."""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session

from db.models import DatasetRecord, Job, ModelRecord
from db.repositories import datasets, jobs, models


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def add_model(session: Session, name: str = "tiny", content: str = "weights", **fields) -> ModelRecord:
    values = dict(
        name=name,
        sha256=sha(content),
        format="safetensors",
        arch="tiny_cnn",
        num_classes=4,
        input_shape=(1, 10, 10),
        storage_key=sha(content),
        size_bytes=123,
        mean=(0.5,),
        std=(0.25,),
    )
    return models.create(session=session, **(values | fields))


def add_dataset(session: Session, name: str = "synthetic", **fields) -> DatasetRecord:
    values = dict(
        name=name,
        sha256=sha(name),
        format="npz",
        num_samples=24,
        input_shape=(1, 10, 10),
        num_classes=4,
        class_names=("a", "b", "c", "d"),
        storage_key=sha(name),
        source=f"{name}.npz",
    )
    return datasets.create(session=session, **(values | fields))


def add_job(session: Session, model: ModelRecord | None = None, dataset: DatasetRecord | None = None) -> Job:
    model = model or add_model(session)
    dataset = dataset or add_dataset(session)
    return jobs.create(
        session=session,
        model_id=model.id,
        dataset_id=dataset.id,
        config={"eps": [0.0, 0.1], "targeted": "next"},
        queue="gpu",
    )


def report_document(eps=(0.0, 0.1, 0.2), with_targeted=True, with_cam=True) -> dict:
    """A report.json-shaped document (the fields the results tables read, plus some others)."""
    return {
        "schema_version": 1,
        "fgsm": [
            {
                "eps": e,
                "eps_255": e * 255,
                "accuracy": 0.9 - e,
                "attack_success_rate": e,
                "mean_confidence": 0.8,
            }
            for e in eps
        ],
        "targeted_fgsm": {
            "policy": "next",
            "points": [
                {
                    "eps": e,
                    "eps_255": e * 255,
                    "accuracy": 0.9 - e,
                    "target_success_rate": e / 2,
                    "mean_target_probability": 0.3,
                }
                for e in eps
            ],
        }
        if with_targeted
        else None,
        "gradcam": {
            "method": "gradcam",
            "layer": "conv2",
            "eps": 0.1,
            "num_samples": 4,
            "mean_similarity": 0.7,
            "mean_top20_iou": 0.5,
            "mean_confidence_drop": None,
            "drift": 0.3,
            "samples": [],
        }
        if with_cam
        else None,
        "summary": {"clean_accuracy": 0.9, "robust_auc": 0.71},
        "warnings": ["ünïcode ✓"],
    }
