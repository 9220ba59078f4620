"""Data: readers (a registry by layout), the prepared image store, splits, the demo generator, uploads."""

# The synthetic demo's size, here (no imports) so that the CLI's parser reads it without numpy:
# 12 classes, 3,000 images of 160 px, seed 0 (core.data.demo.generate's defaults).
DEMO_DEFAULTS = dict(classes=12, images=3000, size=160, seed=0)
