"""core.serve.features: the one place images become embedding vectors (issues 22, 23)."""
import numpy as np
import pytest
import torch
from PIL import Image

from core.serve.features import embed, embed_images, head_input
from core.train.models import build_model


def test_embed_is_the_heads_input_at_unit_length_and_leaves_no_hook(tmp_path):
    model = build_model("small_cnn", 5, weights="none").eval()
    x = torch.rand(4, 3, 32, 32)
    with head_input(model) as grab:
        logits = model(x)
    head = model.submodule(model.head)
    assert torch.allclose(head(grab["x"]), logits, atol=1e-5)          # the vector the head consumes
    e = embed(model, x)
    assert e.shape == (4, grab["x"].shape[1]) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    with pytest.raises(RuntimeError), head_input(model):
        raise RuntimeError("boom")
    assert not head._forward_hooks                                        # removed after an error too
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_text("not a photo")
    feats, ok = embed_images(model, [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "gone.jpg"], 32)
    assert ok.tolist() == [True, False, False] and feats.shape == (1, e.shape[1])
