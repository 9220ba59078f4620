"""Classify a photo with a model from `python -m core export RUN_ID --format onnx`, using only
onnxruntime, Pillow and numpy:  python classify_onnx.py MODEL.onnx PHOTO.jpg  (prints the top 5)."""
import json, sys
import numpy as np, onnxruntime as ort
from PIL import Image, ImageOps

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = json.loads(session.get_modelmeta().custom_metadata_map["landmarks"])  # labels, names, input size
size = meta["input"]["size"]
im = ImageOps.exif_transpose(Image.open(sys.argv[2])).convert("RGB")
w, h = im.size; s = min(w, h)  # the centre square of the shorter side, resized bilinear to size x size
box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
im = im.resize((size, size), Image.BILINEAR, box=box, reducing_gap=2.0 if s >= 2 * size else None)
x = (np.asarray(im, dtype=np.float32) / 255).transpose(2, 0, 1)[None]  # 1 x 3 x size x size, RGB in [0, 1]
logits = session.run(None, {meta["input"]["name"]: x})[0][0]  # normalisation is inside the model
p = np.exp(logits - logits.max()); p /= p.sum()
for i in np.argsort(-p)[:5]:
    print(f"{p[i]:.3f}  {meta['labels'][i]}  {meta['names'][i]}")
