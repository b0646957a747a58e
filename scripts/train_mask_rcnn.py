"""Train the small Mask R-CNN checkpoint segbench ships (``weights: trained``) on synthetic shapes, on a CPU.

    python scripts/train_mask_rcnn.py                    # ~30 min on 2 cores
    python scripts/train_mask_rcnn.py --steps 100 --out /tmp/ckpt

Training runs through torchvision's own training forward (its RPN and RoI-head losses) over the same
modules the deploy graph uses; labels are the shapes categories' COCO ids (class index + 1, 0 is the
background), so the trained detector predicts category ids directly. Every step draws fresh scenes;
the validation split never overlaps the training one. Box and mask AP are measured with the deploy
forward and the shared postprocess, through pycocotools' COCOeval, after rounding the weights to the
float16 they are stored in.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from segbench.data.shapes import NUM_CLASSES, ShapesDataset
from segbench.metrics.tasks import evaluate_instance_task
from segbench.models.mask_rcnn import mask_rcnn
from segbench.models.weights import CHECKPOINT_DIR, round_to_checkpoint_precision, save_checkpoint

OPTIONS = {
    "num_classes": NUM_CLASSES + 1,  # background + every shapes category id; stuff ids never occur
    "backbone": "resnet10",
    "fpn_channels": 64,
    "representation_size": 256,
    "mask_channels": 64,
    "max_detections": 50,
}
# Validation: 32 scenes of the val split at the training size (the scale the anchors were fitted to).
VAL_IMAGES = 32
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "segbench" / "models" / CHECKPOINT_DIR


def targets_of(samples: list) -> list[dict[str, torch.Tensor]]:
    targets = []
    for sample in samples:
        kept = sample.instances
        boxes = [(x, y, x + w, y + h) for x, y, w, h in (inst.bbox for inst in kept)]
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([inst.category + 1 for inst in kept], dtype=torch.int64),
                "masks": torch.from_numpy(np.stack([inst.mask for inst in kept]).astype(np.uint8))
                if kept
                else torch.zeros((0, *sample.semantic.shape), dtype=torch.uint8),
            }
        )
    return targets


@torch.no_grad()
def validate(model: torch.nn.Module, num_images: int, size: int) -> dict[str, float]:
    model.eval()
    samples = list(ShapesDataset(num_images, size, size, seed=0, split="val"))

    def predict(images: np.ndarray) -> list:
        feeds = model.preprocess(images)
        outputs = model(torch.from_numpy(feeds["images"]))
        arrays = {name: out.numpy() for name, out in zip(model.output_names, outputs, strict=True)}
        return model.postprocess(arrays, images.shape[1:3])

    return evaluate_instance_task(predict, samples, batch_size=8, category_offset=model.category_offset)


def train(steps: int, batch_size: int, size: int, seed: int, lr: float, out_dir: Path) -> dict[str, float]:
    torch.manual_seed(seed)
    model = mask_rcnn(**OPTIONS)
    # Training-only sampling (inference is unchanged): torchvision's defaults (2000 proposals, 512 sampled
    # RoIs per image) are sized for 800 px COCO images; scenes of 128 px with a few shapes need far fewer,
    # and the mask head's cost scales with the sampled positives.
    detector = model.reference()
    detector.rpn._pre_nms_top_n["training"] = 600
    detector.rpn._post_nms_top_n["training"] = 300
    detector.roi_heads.fg_bg_sampler.batch_size_per_image = 128
    train_set = ShapesDataset(steps * batch_size, size, size, seed=seed, split="train")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.time()
    for step in range(steps):
        model.train()
        detector = model.reference()  # torchvision's training forward over the same modules
        samples = [train_set[step * batch_size + i] for i in range(batch_size)]
        images = model.preprocess(np.stack([s.image for s in samples]))["images"]
        losses = detector(list(torch.from_numpy(images)), targets_of(samples))
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            parts = " ".join(f"{k.removeprefix('loss_')} {v.item():.3f}" for k, v in losses.items())
            print(
                f"step {step:5d}/{steps} loss {loss.item():.3f} ({parts}) {time.time() - start:.0f}s",
                flush=True,
            )
    round_to_checkpoint_precision(model)  # the stored float16 values: what users get
    metrics = validate(model, num_images=VAL_IMAGES, size=size)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        model,
        out_dir / "mask_rcnn.safetensors",
        OPTIONS,
        extra={
            **{f"val_{k}": v for k, v in metrics.items()},
            "val_images": VAL_IMAGES,
            "val_size": size,
            "training": {"steps": steps, "batch_size": batch_size, "size": size, "seed": seed, "lr": lr},
        },
    )
    print(
        f"mask_rcnn: val box AP {100 * metrics['bbox_ap']:.2f}, mask AP {100 * metrics['segm_ap']:.2f} "
        f"({time.time() - start:.0f}s)",
        flush=True,
    )
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="training image size (square)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train(args.steps, args.batch_size, args.size, args.seed, args.lr, args.out)


if __name__ == "__main__":
    main()
