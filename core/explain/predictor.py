"""Load a finished run's model once and classify images with it (CLI and Classify page)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.train.config import TrainConfig
from core.data.readers import open_image, resize_square
from core.train.engine import read_checkpoint
from core.errors import UserError
from core.train.models import LandmarkNet, build_model
from core.runs.store import RunStore


@dataclass
class Predictor:
    run_id: str
    model: LandmarkNet
    labels: list
    names: list
    cfg: TrainConfig
    weights_mtime: float = 0.0      # when the checkpoint was written (cached images older than it are stale)

    def tensor(self, image) -> torch.Tensor:
        """PIL image (or path / file object) -> (1,3,S,S) float in [0,1], as in training."""
        im = image if hasattr(image, "size") and hasattr(image, "mode") else open_image(image)
        arr = np.asarray(resize_square(im.convert("RGB"), self.cfg.image_size), dtype=np.float32) / 255
        return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()

    @torch.no_grad()
    def cam_grid(self) -> tuple[int, int]:
        """Height and width of the Grad-CAM layer's feature map at this run's image size."""
        if not hasattr(self, "_cam_grid"):
            seen = []
            layer = self.model.submodule(self.model.cam_layer)
            hook = layer.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
            try:
                self.model.eval()(torch.zeros(1, 3, self.cfg.image_size, self.cfg.image_size))
            finally:
                hook.remove()
            self._cam_grid = seen[-1]
        return self._cam_grid

    @torch.no_grad()
    def probs(self, x: torch.Tensor, tta: bool | None = None) -> np.ndarray:
        """Class probabilities of a batch. `tta` (default: the run's config): the mean of each
        image's and its mirror image's probabilities, as the run's evaluation did."""
        p = torch.softmax(self.model(x), 1)
        if self.cfg.tta if tta is None else tta:
            p = (p + torch.softmax(self.model(x.flip(3)), 1)) / 2
        return p.numpy()

    def top(self, x: torch.Tensor, k: int = 5, tta: bool | None = None) -> list[dict]:
        p = self.probs(x, tta)[0]
        order = np.argsort(-p)[:k]
        return [{"class": int(i), "label": self.labels[i], "name": self.names[i], "prob": float(p[i])} for i in order]


def load_predictor(run_id: str, store: RunStore | None = None) -> Predictor:
    run = (store or RunStore()).require(run_id)
    if not run.has_checkpoint():
        raise UserError(f"Run {run_id} has no checkpoint yet; wait for its first epoch to finish.")
    mtime = run.checkpoint_mtime()
    state = read_checkpoint(run.checkpoint)
    cfg = run.config()
    labels = [str(l) for l in state["labels"]]
    model = build_model(cfg.model, len(labels), weights="none")
    model.load_state_dict(state["model"])
    model.eval()
    names = run.class_names()
    return Predictor(run_id, model, labels, [names.get(l, l) for l in labels], cfg, mtime)
