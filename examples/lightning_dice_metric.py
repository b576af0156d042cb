"""Lightning: train with fastdice's DiceCELoss, log fastdice's Dice metric per epoch.

``fastdice.compat.torchmetrics.DiceScore`` is a ``torchmetrics.Metric``, so
``self.log("val/dice", self.val_dice, on_epoch=True)`` logs the Dice of the
whole validation set (not the mean of per-batch values), combined over the DDP
ranks, and Lightning resets it after each epoch. Its update is one fused pass
over the logits and the label map.

    python examples/lightning_dice_metric.py                    # CPU, one process, 2 epochs
    python examples/lightning_dice_metric.py --devices 2        # DDP on gloo, 2 CPU processes

``--record DIR`` also saves each rank's validation logits and labels per epoch
and Lightning's CSV log there (what tests/test_lightning_metric.py checks
against torchmetrics' own DiceScore).
"""

import argparse
import os

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

import fastdice
from fastdice.compat.torchmetrics import DiceScore

NUM_CLASSES = 3


def blobs(n: int, seed: int, size: int = 24):
    """Images with a bright square (class 1) and a dark one (class 2) on noise; class 0 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    images = 0.3 * torch.randn(n, 1, size, size, generator=g)
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for cls, value in ((1, 1.0), (2, -1.0)):
            y, x = torch.randint(0, size - 8, (2,), generator=g).tolist()
            labels[i, y : y + 6, x : x + 6] = cls
            images[i, 0, y : y + 6, x : x + 6] += value
    return TensorDataset(images, labels)


class Segmenter(L.LightningModule):
    def __init__(self, record_dir=None):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, NUM_CLASSES, 3, padding=1)
        )
        self.criterion = fastdice.DiceCELoss()
        # logits (B, C, H, W) and a label map (B, H, W): torchmetrics' "mixed" input format.
        self.val_dice = DiceScore(num_classes=NUM_CLASSES, include_background=False, input_format="mixed")
        self.record_dir = record_dir
        self._recorded = []

    def forward(self, images):
        return self.net(images)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = self.criterion(self(images), labels)
        self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.val_dice.update(logits, labels)
        # The metric object, not a value: Lightning computes it over the epoch, syncs and resets it.
        self.log("val/dice", self.val_dice, on_step=False, on_epoch=True)
        if self.record_dir:
            self._recorded.append((logits.detach().clone(), labels.clone()))

    def on_validation_epoch_end(self):
        if self.record_dir and self._recorded:
            logits, labels = (torch.cat(parts) for parts in zip(*self._recorded))
            path = os.path.join(self.record_dir, f"val_epoch{self.current_epoch}_rank{self.global_rank}.pt")
            torch.save({"logits": logits, "labels": labels}, path)
        self._recorded = []

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.02)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1, help="CPU processes (more than 1: DDP on gloo)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--record", default=None, help="folder for the validation predictions and the CSV log")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    log_dir = args.record or "lightning_logs_fastdice"
    if args.record:
        os.makedirs(args.record, exist_ok=True)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=args.epochs,
        num_sanity_val_steps=0,
        logger=CSVLogger(log_dir, name="csv", version=0),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    model = Segmenter(record_dir=args.record)
    # 16 training and 12 validation images: batches of 3 split evenly over 1 or 2 ranks
    # (no sample repeated by the distributed sampler's padding).
    train = DataLoader(blobs(16, seed=1), batch_size=4, shuffle=True)
    val = DataLoader(blobs(12, seed=2), batch_size=3)
    trainer.fit(model, train, val)
    if trainer.is_global_zero:
        print({k: round(float(v), 4) for k, v in trainer.callback_metrics.items()})


if __name__ == "__main__":
    main()
