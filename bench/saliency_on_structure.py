"""Do a trained run's explanations point at the landmark rather than the sky?

Renders fresh demo photos (a seed the run never saw) together with the landmark's pixel mask,
and for each explanation method reports the share of attribution mass that falls on the
landmark against the landmark's share of the image area (1.0x = no better than uniform).

    python bench/saliency_on_structure.py RUN_ID [--images 60] [--methods saliency,gradcam]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_id")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--methods", default="saliency,gradcam,integrated_gradients")
    a = ap.parse_args(argv)
    from core.explain import landmark_focus
    from core.runs.store import RunStore
    from core.serve.predictor import load_predictor
    pred = load_predictor(RunStore().require(a.run_id))
    print(json.dumps(landmark_focus(pred, a.images, tuple(a.methods.split(","))), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
