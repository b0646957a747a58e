"""Train the small panoptic Mask2Former checkpoint segbench ships (``weights: trained``), on a CPU.

    python scripts/train_mask2former.py                      # the shipped checkpoint, ~30 min on 1 core
    python scripts/train_mask2former.py --steps 200 --out /tmp/ckpt

The loss is transformers' own Mask2Former training loss (Hungarian matching, then class cross-entropy,
point-sampled mask BCE and dice, with auxiliary losses on every decoder layer). Each step draws fresh
training scenes from the indexed generator, so there is no fixed training set to overfit; the validation
split never overlaps it. Seeds fix the initialisation, the data and the loss's point sampling, so a rerun
with the same library versions and thread count reproduces the checkpoint. The checkpoint records its
constructor options, the training settings and its validation PQ/SQ/RQ in the safetensors metadata.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segbench.data.shapes import NUM_CLASSES, STUFF_CLASSES, ShapesDataset, ShapesSample
from segbench.metrics.tasks import panoptic_quality
from segbench.models.mask2former import Mask2Former, mask2former
from segbench.models.weights import CHECKPOINT_DIR, round_to_checkpoint_precision, save_checkpoint

# Exactly the constructor kwargs: save_checkpoint records them so ``weights: trained`` rebuilds this net.
OPTIONS: dict[str, Any] = {
    "num_classes": NUM_CLASSES,
    "backbone": "resnet-tiny",
    "num_queries": 20,
    "hidden_dim": 64,
    "encoder_layers": 2,
    "decoder_layers": 4,
    "task": "panoptic",
    "stuff_classes": list(range(len(STUFF_CLASSES))),
}
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "segbench" / "models" / CHECKPOINT_DIR
CHECKPOINT_NAME = "mask2former.safetensors"


def targets_of(sample: ShapesSample) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask2Former targets of one scene: ``(masks [S, H, W] float, class indices [S] int64)``.

    One segment per stuff class present and one per kept instance. Ignored pixels (dropped fragments)
    belong to no segment, so every mask is 0 there.
    """
    masks: list[np.ndarray] = []
    classes: list[int] = []
    for stuff_index in range(len(STUFF_CLASSES)):
        mask = sample.semantic == stuff_index
        if mask.any():
            masks.append(mask)
            classes.append(stuff_index)
    for inst in sample.instances:
        masks.append(inst.mask)
        classes.append(inst.category)
    return torch.from_numpy(np.stack(masks)).float(), torch.tensor(classes, dtype=torch.int64)


def batch_of(
    dataset: ShapesDataset, start: int, size: int, model: Mask2Former
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Normalised images and per-image target masks/classes of samples ``start .. start + size - 1``."""
    samples = [dataset[start + i] for i in range(size)]
    images = torch.from_numpy(model.preprocess(np.stack([s.image for s in samples]))["images"])
    targets = [targets_of(s) for s in samples]
    return images, [t[0] for t in targets], [t[1] for t in targets]


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and kernels only: decaying norm scales and biases just fights the normalisation."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def validate(model: Mask2Former, num_images: int, size: int, seed: int) -> dict[str, Any]:
    """PQ/SQ/RQ (all/things/stuff) of the wrapper's panoptic output on the validation split."""
    model.eval()
    samples = list(ShapesDataset(num_images, size, size, seed=seed, split="val"))

    @torch.no_grad()
    def predict(images: np.ndarray) -> list:
        class_logits, mask_logits = model(torch.from_numpy(model.preprocess(images)["images"]))
        outputs = {"class_logits": class_logits.numpy(), "mask_logits": mask_logits.numpy()}
        return model.postprocess(outputs, images.shape[1:3])

    return panoptic_quality(predict, samples, batch_size=8, category_offset=model.category_offset)


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train, round to float16, validate and write the checkpoint; returns the PQ summary."""
    torch.manual_seed(args.seed)
    model = mask2former(**OPTIONS)
    network = model._network[0]  # transformers' module: called with labels it returns its training loss
    network.train()
    train_set = ShapesDataset(
        args.steps * args.batch_size, args.size, args.size, seed=args.seed, split="train"
    )
    optimizer = torch.optim.AdamW(param_groups(network, args.weight_decay), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, args.steps, args.warmup)
    )
    start = time.time()
    recent: list[float] = []
    for step in range(args.steps):
        images, masks, classes = batch_of(train_set, step * args.batch_size, args.batch_size, model)
        loss = network(pixel_values=images, mask_labels=masks, class_labels=classes).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # From-scratch transformers with Hungarian matching have occasional gradient spikes early on.
        nn.utils.clip_grad_norm_(network.parameters(), args.clip)
        optimizer.step()
        schedule.step()
        recent.append(loss.item())
        if step % 50 == 0 or step == args.steps - 1:
            print(
                f"mask2former step {step:5d}/{args.steps} loss {loss.item():.3f} "
                f"(mean of last {len(recent)}: {np.mean(recent):.3f}) lr {schedule.get_last_lr()[0]:.2e} "
                f"({time.time() - start:.0f}s)",
                flush=True,
            )
            recent = []
    train_seconds = time.time() - start
    round_to_checkpoint_precision(model)  # the stored float16 values: what users get
    metrics = validate(model, num_images=args.val_images, size=args.val_size, seed=0)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / CHECKPOINT_NAME
    save_checkpoint(
        model,
        path,
        OPTIONS,
        extra={
            "val_pq": metrics["all"]["pq"],
            "val_sq": metrics["all"]["sq"],
            "val_rq": metrics["all"]["rq"],
            "val_pq_things": metrics["things"]["pq"],
            "val_pq_stuff": metrics["stuff"]["pq"],
            "val_images": args.val_images,
            "val_size": args.val_size,
            "training": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "size": args.size,
                "seed": args.seed,
                "lr": args.lr,
                "warmup": args.warmup,
                "weight_decay": args.weight_decay,
                "clip": args.clip,
            },
        },
    )
    print(f"training {train_seconds:.0f}s; validation on {args.val_images} scenes at {args.val_size}px:")
    for group in ("all", "things", "stuff"):
        m = metrics[group]
        print(f"  {group:6s} PQ {100 * m['pq']:.2f}  SQ {100 * m['sq']:.2f}  RQ {100 * m['rq']:.2f}")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="training image size (square)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"directory for {CHECKPOINT_NAME}")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--clip", type=float, default=1.0, help="gradient max norm")
    parser.add_argument("--val-images", type=int, default=32)
    parser.add_argument("--val-size", type=int, default=128, help="validation image size (square)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
