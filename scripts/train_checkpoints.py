"""Train the small checkpoints segbench ships (``weights: trained``) on the synthetic shapes data, on a CPU.

    python scripts/train_checkpoints.py                  # all semantic models, ~10 min on 2 cores
    python scripts/train_checkpoints.py --models unet --steps 200 --out /tmp/ckpt
    # the smp checkpoints (segbench[zoo]), each in its own one-thread process:
    OMP_NUM_THREADS=1 python scripts/train_checkpoints.py --models unet_resnet34 --steps 600 --size 64
    OMP_NUM_THREADS=1 python scripts/train_checkpoints.py --models linknet_resnet34 --steps 600 --size 64

Every step draws fresh training scenes (the generator is indexed, so there is no fixed training set to
overfit); the validation split never overlaps the training split. Seeds fix the initialisation and the
data, so a rerun on the same library versions reproduces the checkpoints. Each checkpoint records its
constructor options, the training settings and its validation mIoU in the safetensors metadata.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segbench.data.shapes import IGNORE_INDEX, NUM_CLASSES, ShapesDataset
from segbench.metrics.semantic import confusion_matrix, semantic_metrics
from segbench.models.registry import build_model
from segbench.models.weights import CHECKPOINT_DIR, round_to_checkpoint_precision, save_checkpoint

# Reduced widths keep each checkpoint a few MB; the full architectures stay selectable by option.
RECIPES = {
    "fcn32s": {"options": {"num_classes": NUM_CLASSES, "width": 0.125, "batch_norm": True}, "lr": 2e-3},
    "fcn16s": {"options": {"num_classes": NUM_CLASSES, "width": 0.125, "batch_norm": True}, "lr": 2e-3},
    "fcn8s": {"options": {"num_classes": NUM_CLASSES, "width": 0.125, "batch_norm": True}, "lr": 2e-3},
    "unet": {"options": {"num_classes": NUM_CLASSES, "base_channels": 8}, "lr": 3e-3},
    # smp families (pip install segbench[zoo]): ResNet-18 encoder cut after its stride-8 stage.
    "unet_resnet34": {
        "options": {
            "num_classes": NUM_CLASSES,
            "encoder": "resnet18",
            "encoder_depth": 3,
            "decoder_channels": [64, 32, 16],
        },
        "lr": 3e-3,
    },
    "linknet_resnet34": {
        "options": {"num_classes": NUM_CLASSES, "encoder": "resnet18", "encoder_depth": 3},
        "lr": 3e-3,
    },
}
# Trained when --models is not given; the smp ones need the zoo extra and are asked for by name.
DEFAULT_MODELS = ("fcn32s", "fcn16s", "fcn8s", "unet")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "segbench" / "models" / CHECKPOINT_DIR


def batch_of(
    dataset: ShapesDataset, start: int, size: int, model: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    samples = [dataset[(start + i) % len(dataset)] for i in range(size)]
    images = np.stack([s.image for s in samples])
    labels = np.stack([s.semantic for s in samples]).astype(np.int64)
    return torch.from_numpy(model.preprocess(images)["images"]), torch.from_numpy(labels)


@torch.no_grad()
def validate(model: nn.Module, num_images: int, size: int, seed: int) -> dict[str, float]:
    model.eval()
    dataset = ShapesDataset(num_images, size, size, seed=seed, split="val")
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for start in range(0, num_images, 8):
        images, labels = batch_of(dataset, start, min(8, num_images - start), model)
        pred = model(images).argmax(1).numpy()
        cm += confusion_matrix(pred, labels.numpy(), NUM_CLASSES, IGNORE_INDEX)
    return semantic_metrics(cm)


def train(name: str, steps: int, batch_size: int, size: int, seed: int, out_dir: Path) -> dict[str, float]:
    recipe = RECIPES[name]
    model = build_model(name, options=recipe["options"], seed=seed)
    model.train()
    train_set = ShapesDataset(steps * batch_size, size, size, seed=seed, split="train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe["lr"], total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    start = time.time()
    for step in range(steps):
        images, labels = batch_of(train_set, step * batch_size, batch_size, model)
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(
                f"{name} step {step:4d}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f}s)",
                flush=True,
            )
    round_to_checkpoint_precision(model)  # the stored float16 values: what users get
    metrics = validate(model, num_images=32, size=256, seed=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        model,
        out_dir / f"{name}.safetensors",
        recipe["options"],
        extra={
            "val_miou": metrics["miou"],
            "val_pixel_accuracy": metrics["pixel_accuracy"],
            "training": {
                "steps": steps,
                "batch_size": batch_size,
                "size": size,
                "seed": seed,
                "lr": recipe["lr"],
            },
        },
    )
    print(
        f"{name}: val mIoU {100 * metrics['miou']:.2f}, pixel acc {100 * metrics['pixel_accuracy']:.2f} "
        f"({time.time() - start:.0f}s)",
        flush=True,
    )
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated, of {', '.join(RECIPES)}"
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=96, help="training image size (square)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    for name in args.models.split(","):
        train(name, args.steps, args.batch_size, args.size, args.seed, args.out)


if __name__ == "__main__":
    main()
