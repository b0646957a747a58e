"""Check ``segbench eval --task panoptic`` against the reference COCO panoptic evaluation.

panopticapi (github.com/cocodataset/panopticapi) is not on PyPI, so this is a script, not a test: point
it at a checkout. It writes synthetic scenes as COCO panoptic ground truth, Mask2Former's predictions
(shipped checkpoint) in the same format, runs panopticapi's ``pq_compute`` and ``segbench eval`` on the
same files and prints both.

    python scripts/compare_pq_with_panopticapi.py --panopticapi PATH/TO/panopticapi --out /tmp/pq
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segbench.data import write_shapes_dataset
from segbench.data.coco import id_to_rgb
from segbench.data.shapes import ShapesDataset
from segbench.models import build_model


def write_predictions(root: Path, dataset: ShapesDataset, images_info: list[dict]) -> tuple[Path, Path]:
    model = build_model("mask2former", "trained")
    images = np.stack([sample.image for sample in dataset])
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), 8):
            batch = images[start : start + 8]
            raw = model(torch.from_numpy(model.preprocess(batch)["images"]))
            raw = raw if isinstance(raw, tuple) else (raw,)
            named = {name: t.numpy() for name, t in zip(model.output_names, raw, strict=True)}
            outputs += model.postprocess(named, batch.shape[1:3])
    folder = root / "pred"
    folder.mkdir(parents=True, exist_ok=True)
    annotations = []
    for info, (id_map, segments) in zip(images_info, outputs, strict=True):
        name = Path(info["file_name"]).with_suffix(".png").name
        Image.fromarray(id_to_rgb(id_map.astype(np.int64))).save(folder / name)
        segments_info = [
            {"id": int(s["id"]), "category_id": int(s["category_id"]) + model.category_offset}
            for s in segments
        ]
        annotations.append({"image_id": info["id"], "file_name": name, "segments_info": segments_info})
    path = root / "pred.json"
    path.write_text(json.dumps({"annotations": annotations}))
    return path, folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panopticapi", type=Path, required=True, help="a panopticapi checkout")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=24)
    args = parser.parse_args()
    sys.path.insert(0, str(args.panopticapi))
    from panopticapi.evaluation import pq_compute

    dataset = ShapesDataset(args.images, 128, 128, seed=3, split="val")
    write_shapes_dataset(args.out, dataset)
    truth = json.loads((args.out / "panoptic.json").read_text())
    pred_json, pred_dir = write_predictions(args.out, dataset, truth["images"])
    reference = pq_compute(
        str(args.out / "panoptic.json"), str(pred_json), str(args.out / "panoptic"), str(pred_dir)
    )
    command = ["segbench", "eval", "--task", "panoptic", "--gt", str(args.out / "panoptic.json"),
               "--pred", str(pred_json), "--pred-dir", str(pred_dir)]  # fmt: skip
    ours = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    for part in ("All", "Things", "Stuff"):
        pairs = {k: (reference[part][k], ours[part.lower()][k]) for k in ("pq", "sq", "rq")}
        print(
            f"{part:6s} "
            + "  ".join(f"{k} panopticapi {a:.12f} segbench {b:.12f}" for k, (a, b) in pairs.items())
        )


if __name__ == "__main__":
    main()
