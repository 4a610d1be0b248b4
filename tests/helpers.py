"""Helpers several test modules share (no test module imports another)."""

from __future__ import annotations

from pathlib import Path

import yaml

from calm_rag.cli import main


def experiment(tiny: Path, runs: Path, **changes) -> dict:
    """A small experiment on the tiny model: 4 train + 2 held-out questions, 2 languages.

    ``changes`` set nested keys, ``evaluation__option_scores=True`` for
    ``evaluation.option_scores``."""
    data = {
        "name": "tiny",
        "data": {"source": "bundled", "dataset": "commonsense", "languages": ["en", "fr"],
                 "train": 4, "heldout": 2},
        "generator": {"backend": "hf", "model": str(tiny),
                      "options": {"batch_size": 4, "threads": 1}},
        "sampling": {"n": 3, "temperature": 1.0, "max_tokens": 12, "seed": 1},
        "retrieval": {"enabled": False},
        "vote": {"chosen_fallback": "pivot"},
        "align": {"epochs": 1, "batch_size": 4, "max_length": 256, "learning_rate": 1e-3,
                  "threads": 1},
        "evaluation": {"sampling": {"n": 1, "temperature": 0.0, "max_tokens": 12}},
        "shard_questions": 2,
        "runs_dir": str(runs),
    }
    for key, value in changes.items():
        node = data
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def write_experiment(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run_cli(path: Path, *args: str) -> int:
    return main(["run", str(path), "--quiet", *args])


def latest_run(runs: Path, name: str = "tiny") -> Path:
    folder = runs / name
    return folder / (folder / "LATEST").read_text().strip()
