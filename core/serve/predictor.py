"""Load a finished run's model once and classify images with it (CLI, Classify page, export).

`load_predictor(run)` takes a run object (core.runs.store.Run or anything with `.id`,
`.checkpoint`, `.config()` and `.class_names()`); callers get it from `store.require(run_id)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.train.config import TrainConfig
from core.data.readers import open_image, resize_square
from core.train.engine import read_checkpoint
from core.errors import UserError
from core.train.models import LandmarkNet, build_model, class_probs


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
        return class_probs(self.model, x, self.cfg.tta if tta is None else tta).numpy()

    def top(self, x: torch.Tensor, k: int = 5, tta: bool | None = None) -> list[dict]:
        p = self.probs(x, tta)[0]
        order = np.argsort(-p)[:k]
        return [{"class": int(i), "label": self.labels[i], "name": self.names[i], "prob": float(p[i])} for i in order]


def load_predictor(run) -> Predictor:
    """The run's model on the CPU in eval mode, with its labels, class names and config."""
    try:
        mtime = run.checkpoint.stat().st_mtime
    except OSError:
        raise UserError(f"Run {run.id} has no checkpoint yet; wait for its first epoch to finish.") from None
    state = read_checkpoint(run.checkpoint)
    cfg = run.config()
    labels = [str(l) for l in state["labels"]]
    model = build_model(cfg.model, len(labels), weights="none")
    model.load_state_dict(state["model"])
    model.eval()
    names = run.class_names()
    return Predictor(run.id, model, labels, [names.get(l, l) for l in labels], cfg, mtime)
