"""The SE paper's analysis of excitation: the format of a profile, as shipped next to
an SE model's weights and drawn by the app (``attnviz.training.profile`` computes it).

``specificity[block]`` is the between-class share of the variance of the gates,
0..1: 0 when every class has the same mean gates, 1 when they depend only on the class.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class SEProfile:
    """``means[block]``: (classes, channels) mean gate of each class in 0..1;
    ``specificity[block]``: between-class share of the gate variance."""

    model: str
    classes: list[str]
    images: int
    means: dict[str, list[list[float]]]
    specificity: dict[str, float]

    def to_json(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    @classmethod
    def from_json(cls, path: Path) -> SEProfile:
        return cls(**json.loads(Path(path).read_text()))

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["block", "class", "channel", "mean_gate"])
            for block, rows in self.means.items():
                for cls_name, row in zip(self.classes, rows):
                    for ch, v in enumerate(row):
                        w.writerow([block, cls_name, ch, f"{v:.6f}"])


def profile_path(weights_path: Path) -> Path:
    """Where the profile shipped with a weights pair lives: ``<name>.profile.json``."""
    return weights_path.with_name(f"{weights_path.stem}.profile.json")

