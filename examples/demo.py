"""Demo: train a small 2D UNet on a generated, class-imbalanced lesion data set
with cross-entropy, the fused Dice loss, and Dice + cross-entropy.

    python examples/demo.py [--epochs N] [--size S] [--device cpu|cuda] [--out DIR] ...

(``make demo`` runs it from a source checkout; ``python -m fastdice.demo`` too.)

Everything is generated from ``--seed`` (no downloads): a textured, noisy
background (smoothed noise at two scales, a random intensity gradient, pixel
noise) with small structures of two foreground classes covering a few percent
of the pixels: class 1 small round bright spots, class 2 thin elongated
ellipses, dimmer. The model is a small 2-level UNet (BatchNorm by default,
``--norm group`` for GroupNorm). The three runs share the model initialization,
the data, the batch order and the budget (epochs, batch size, Adam learning rate).

Reported per epoch: the hard validation Dice per foreground class (argmax
prediction; TP/FP/FN counted over the whole validation set; a class absent
from both prediction and target counts as 1), epoch 0 being the untrained
model. It is computed with ``fastdice.metrics.DiceScore`` straight from the
validation logits (``validation_dice``); ``hard_dice`` is the same number
counted in plain torch from argmax predictions. For every training batch of the fused-Dice run, the fused loss and the
pure-PyTorch reference (``fastdice.reference.dice_loss``) are also timed,
forward + backward, on the same (detached) logits.

Writes ``demo.png`` (validation Dice per epoch; validation images with
ground-truth and predicted overlays) and ``demo.json`` (config, curves,
timings) to ``--out``, then prints a summary table.
"""

import argparse
import json
import math
import os
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import fastdice
from fastdice import metrics, reference

NUM_CLASSES = 3  # background, round spots, elongated lesions
CLASS_NAMES = ("background", "spot", "streak")
LOSS_NAMES = ("ce", "dice", "dice+ce")
DICE_OPTIONS = dict(activation="softmax", pooling="batch", include_background=False)


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _paint_ellipses(images, labels, cls, count, semi_a, semi_b, amp, g, yy, xx):
    """Paints up to count.max() ellipses per image (vectorized over images).

    semi_a/semi_b: (lo, hi) semi-axes in pixels; amp: (lo, hi) intensity.
    The label is the inside of the ellipse; the intensity has a soft edge.
    """
    n, size = images.shape[0], images.shape[-1]
    for k in range(int(count.max())):
        present = (k < count).float().view(n, 1, 1)
        cy = _uniform(n, 0.08 * size, 0.92 * size, g).view(n, 1, 1)
        cx = _uniform(n, 0.08 * size, 0.92 * size, g).view(n, 1, 1)
        a = _uniform(n, *semi_a, g).view(n, 1, 1)
        b = _uniform(n, *semi_b, g).view(n, 1, 1)
        theta = _uniform(n, 0.0, math.pi, g).view(n, 1, 1)
        h = _uniform(n, *amp, g).view(n, 1, 1)
        dy, dx = yy - cy, xx - cx
        u = (dx * torch.cos(theta) + dy * torch.sin(theta)) / a
        v = (-dx * torch.sin(theta) + dy * torch.cos(theta)) / b
        d = torch.sqrt(u * u + v * v)  # 1 on the boundary
        profile = torch.sigmoid((1.0 - d) * 6.0) * present
        images += h * profile
        labels[(d <= 1.0) & (present > 0)] = cls


def make_dataset(n: int, size: int, g: torch.Generator):
    """n images (n, 1, size, size) float32 and label maps (n, size, size) int64."""
    def smooth_noise(side, mode):
        noise = torch.randn(n, 1, side, side, generator=g)
        return F.interpolate(noise, size=(size, size), mode=mode, align_corners=False)

    coarse = smooth_noise(4, "bicubic")
    fine = smooth_noise(max(size // 6, 2), "bilinear")
    ramp = torch.linspace(-0.5, 0.5, size)
    gy = _uniform(n, -1.5, 1.5, g).view(n, 1, 1, 1)
    gx = _uniform(n, -1.5, 1.5, g).view(n, 1, 1, 1)
    gradient = gy * ramp.view(1, 1, size, 1) + gx * ramp.view(1, 1, 1, size)
    images = 0.7 * coarse + 0.45 * fine + gradient
    labels = torch.zeros(n, size, size, dtype=torch.int64)
    yy = torch.arange(size, dtype=torch.float32).view(1, size, 1)
    xx = torch.arange(size, dtype=torch.float32).view(1, 1, size)
    s = size / 64.0  # lesion sizes scale with the image
    # class 2 first (streaks), then class 1 (spots) on top where they overlap
    count2 = torch.randint(0, 4, (n,), generator=g)
    _paint_ellipses(images[:, 0], labels, 2, count2, (6.0 * s, 10.0 * s), (1.6 * s, 2.6 * s), (1.0, 1.5), g, yy, xx)
    count1 = torch.randint(0, 5, (n,), generator=g)
    _paint_ellipses(images[:, 0], labels, 1, count1, (2.2 * s, 4.0 * s), (2.2 * s, 4.0 * s), (1.3, 2.0), g, yy, xx)
    images += 0.35 * torch.randn(images.shape, generator=g)
    mean = images.mean((1, 2, 3), keepdim=True)
    std = images.std((1, 2, 3), keepdim=True)
    return ((images - mean) / std).float(), labels


# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(4, channels), channels)
    raise ValueError(f"unknown norm {kind!r}")


def _block(cin: int, cout: int, norm_kind: str) -> nn.Sequential:
    def norm(c):
        return _norm(norm_kind, c)

    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A 2-level UNet: widths w, 2w, 4w (bottleneck); BatchNorm or GroupNorm; ReLU."""

    def __init__(self, in_channels: int = 1, num_classes: int = NUM_CLASSES, width: int = 8, norm: str = "batch"):
        super().__init__()
        w = width
        self.enc1 = _block(in_channels, w, norm)
        self.enc2 = _block(w, 2 * w, norm)
        self.mid = _block(2 * w, 4 * w, norm)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _block(4 * w, 2 * w, norm)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _block(2 * w, w, norm)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


# ----------------------------------------------------------------------------
# Losses, metrics, timing
# ----------------------------------------------------------------------------


def make_criterion(name: str) -> nn.Module:
    if name == "ce":
        return nn.CrossEntropyLoss()
    if name == "dice":
        return fastdice.DiceLoss(**DICE_OPTIONS)
    if name == "dice+ce":
        # One fused pass for both terms: the cross-entropy rides along in the Dice kernel.
        return fastdice.DiceCELoss(**DICE_OPTIONS)
    raise ValueError(name)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    preds = [model(images[i : i + batch_size]).argmax(1) for i in range(0, images.shape[0], batch_size)]
    model.train()
    return torch.cat(preds)


def make_validation_metric() -> metrics.DiceScore:
    """Hard Dice per foreground class over the whole validation set; 1 if a class is absent from both."""
    return metrics.DiceScore(NUM_CLASSES, include_background=False, average="none", aggregation_level="global",
                             empty="one").set_dtype(torch.float64)


@torch.no_grad()
def validation_dice(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Dict[int, float]:
    """Per foreground class, the hard Dice of the model on (images, labels) with fastdice.metrics:
    one fused pass per batch over the logits and the label map, no argmax or one-hot tensor."""
    metric = make_validation_metric()
    model.eval()
    for i in range(0, images.shape[0], batch_size):
        metric.update(model(images[i : i + batch_size]), labels[i : i + batch_size])
    model.train()
    scores = metric.compute().tolist()  # classes 1 .. NUM_CLASSES - 1
    return {c: scores[c - 1] for c in range(1, NUM_CLASSES)}


def hard_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES) -> Dict[int, float]:
    """Per foreground class: 2TP / (2TP + FP + FN) over the whole set; 1 if the class is absent from both."""
    out = {}
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        tp = (p & t).sum().item()
        fp = (p & ~t).sum().item()
        fn = (~p & t).sum().item()
        denom = 2 * tp + fp + fn
        out[c] = 1.0 if denom == 0 else 2 * tp / denom
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_fwd_bwd(fn, logits: torch.Tensor, labels: torch.Tensor, device: torch.device):
    """(seconds, loss value, grad) of fn(x, labels).backward() on a detached copy x of logits."""
    x = logits.detach().clone().requires_grad_(True)
    _sync(device)
    t0 = time.perf_counter()
    loss = fn(x, labels)
    loss.backward()
    _sync(device)
    return time.perf_counter() - t0, loss.detach(), x.grad


class LossTimer:
    """Times fused vs reference Dice forward+backward on the same logits batches."""

    def __init__(self, device: torch.device):
        self.device = device
        self.fused = fastdice.DiceLoss(**DICE_OPTIONS)
        self.fused_s = 0.0
        self.reference_s = 0.0
        self.batches = 0
        self.max_loss_diff = 0.0
        self.max_grad_diff = 0.0

    def reference_fn(self, x, labels):
        return reference.dice_loss(x, labels, **DICE_OPTIONS)

    def warm_up(self, logits, labels):
        for fn in (self.fused, self.reference_fn):
            _time_fwd_bwd(fn, logits, labels, self.device)

    def measure(self, logits, labels):
        # alternate which goes first, so neither always runs on a warmer cache
        order = [("fused", self.fused), ("reference", self.reference_fn)]
        if self.batches % 2:
            order.reverse()
        results = {name: _time_fwd_bwd(fn, logits, labels, self.device) for name, fn in order}
        self.fused_s += results["fused"][0]
        self.reference_s += results["reference"][0]
        self.batches += 1
        (_, fused_loss, fused_grad), (_, ref_loss, ref_grad) = results["fused"], results["reference"]
        self.max_loss_diff = max(self.max_loss_diff, (fused_loss - ref_loss).abs().item())
        self.max_grad_diff = max(self.max_grad_diff, (fused_grad - ref_grad).abs().max().item())

    def summary(self) -> dict:
        n = max(self.batches, 1)
        return {
            "batches": self.batches,
            "fastdice_total_s": self.fused_s,
            "reference_total_s": self.reference_s,
            "fastdice_ms_per_batch": 1e3 * self.fused_s / n,
            "reference_ms_per_batch": 1e3 * self.reference_s / n,
            "speedup_reference_over_fastdice": self.reference_s / self.fused_s if self.fused_s > 0 else None,
            "max_abs_loss_diff": self.max_loss_diff,
            "max_abs_grad_diff": self.max_grad_diff,
        }


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------


def train_one(name, args, data, device, show_idx, timer: Optional[LossTimer]):
    train_x, train_y, val_x, val_y = data
    torch.manual_seed(args.seed)  # same initialization for every loss
    model = UNet(width=args.width, norm=args.norm).to(device)
    criterion = make_criterion(name).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    order_gen = torch.Generator().manual_seed(args.seed + 1)  # same batch order for every loss

    history = []

    def evaluate(epoch, train_loss):
        per_class = validation_dice(model, val_x, val_y, args.batch_size)
        history.append({
            "epoch": epoch,
            "train_loss": train_loss,
            "dice": {CLASS_NAMES[c]: v for c, v in per_class.items()},
            "mean_fg_dice": sum(per_class.values()) / len(per_class),
        })
        return history[-1]["mean_fg_dice"]

    evaluate(0, None)  # the untrained model
    n = train_x.shape[0]
    steps_per_epoch = math.ceil(n / args.batch_size)
    train_s = 0.0
    bar = _progress(total=args.epochs * steps_per_epoch, desc=f"{name:>8}", disable=args.no_progress)
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(n, generator=order_gen)
        running, seen = 0.0, 0
        for i in range(0, n, args.batch_size):
            idx = perm[i : i + args.batch_size]
            x, y = train_x[idx].to(device), train_y[idx].to(device)
            _sync(device)
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = criterion(logits, y)
            loss.backward()
            optimizer.step()
            _sync(device)
            train_s += time.perf_counter() - t0
            if timer is not None:
                if timer.batches == 0:
                    timer.warm_up(logits, y)
                timer.measure(logits, y)
            running += loss.item() * idx.numel()
            seen += idx.numel()
            bar.update(1)
            bar.set_postfix(loss=f"{running / seen:.3f}", val_dice=f"{history[-1]['mean_fg_dice']:.3f}")
        evaluate(epoch, running / seen)
        bar.set_postfix(loss=f"{running / seen:.3f}", val_dice=f"{history[-1]['mean_fg_dice']:.3f}")
    bar.close()
    shown = predict(model, val_x[show_idx], args.batch_size).cpu()
    return {"history": history, "train_s": train_s, "shown_pred": shown}


def _warm_up(args, data, device) -> None:
    """One untimed training step on a throwaway model, so that one-time set-up costs
    (kernel selection, allocator) do not land in the first run's train time."""
    model = UNet(width=args.width, norm=args.norm).to(device)
    x, y = data[0][: args.batch_size], data[1][: args.batch_size]
    for criterion in (nn.CrossEntropyLoss(), fastdice.DiceLoss(**DICE_OPTIONS)):
        criterion(model(x), y).backward()
    _sync(device)


def _progress(total, desc, disable):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a demo dependency; run without a bar if it is missing
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="batch", disable=disable, dynamic_ncols=True)


class _NoBar:
    def update(self, *a):
        pass

    def set_postfix(self, *a, **k):
        pass

    def close(self):
        pass


# ----------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------

_COLORS = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.2, 0.1], [0.1, 0.9, 1.0]])  # per class, RGB


def _overlay(image: torch.Tensor, label: torch.Tensor, alpha: float = 0.6):
    """Grayscale image (H, W) with the foreground classes of label (H, W) tinted: (H, W, 3) numpy."""
    lo, hi = image.min(), image.max()
    gray = ((image - lo) / (hi - lo + 1e-8)).unsqueeze(-1).expand(*image.shape, 3)
    color = _COLORS[label]
    fg = (label > 0).unsqueeze(-1).float() * alpha
    return (gray * (1 - fg) + color * fg).clamp(0, 1).numpy()


def save_figure(path, results, val_x, val_y, show_idx, epochs):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend
    from matplotlib.ticker import MaxNLocator

    rows = len(show_idx)
    cols = 2 + len(results)  # image, ground truth, one per loss
    fig = Figure(figsize=(5 + 1.9 * cols, max(4.0, 1.9 * rows)), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[5, 1.9 * cols])
    ax = left.subplots()
    for name, res in results.items():
        ys = [h["mean_fg_dice"] for h in res["history"]]
        ax.plot(range(len(ys)), ys, marker="o", markersize=3, label=f"{name} (final {ys[-1]:.3f})")
    ax.set_xlabel("epoch (0 = untrained)")
    ax.set_ylabel("validation mean foreground Dice (hard)")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, epochs)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("validation Dice per epoch")
    axes = right.subplots(rows, cols, squeeze=False)
    titles = ["image", "ground truth"] + list(results)
    for r, i in enumerate(show_idx):
        img = val_x[i, 0].cpu()
        panels = [_overlay(img, torch.zeros_like(val_y[i].cpu())), _overlay(img, val_y[i].cpu())]
        panels += [_overlay(img, res["shown_pred"][r]) for res in results.values()]
        for c, panel in enumerate(panels):
            a = axes[r][c]
            a.imshow(panel, interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            if r == 0:
                a.set_title(titles[c], fontsize=10)
    right.suptitle("validation images (red: spot, cyan: streak)", fontsize=10)
    fig.savefig(path, dpi=100)


def _pick_examples(val_y: torch.Tensor, k: int) -> List[int]:
    """Up to k validation images, preferring ones that contain both foreground classes."""
    both = [i for i in range(val_y.shape[0]) if (val_y[i] == 1).any() and (val_y[i] == 2).any()]
    rest = [i for i in range(val_y.shape[0]) if i not in both]
    return (both + rest)[: min(k, val_y.shape[0])]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python examples/demo.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=25, help="training epochs per loss")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (a multiple of 4, >= 8)")
    p.add_argument("--train-images", type=int, default=320, help="generated training images")
    p.add_argument("--val-images", type=int, default=64, help="generated validation images (held out)")
    p.add_argument("--batch-size", type=int, default=16, help="training (and evaluation) batch size")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--width", type=int, default=8, help="UNet base width (channels)")
    p.add_argument("--norm", choices=("batch", "group"), default="batch", help="normalization layers of the UNet")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the initialization and the batch order")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--out", default="demo_out/", help="folder for demo.png and demo.json")
    p.add_argument("--show", type=int, default=4, help="validation images in the figure")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-figure", action="store_true", help="write demo.json and the table only (no matplotlib needed)")
    args = p.parse_args(argv)
    if args.size < 8 or args.size % 4:
        p.error(f"--size must be a multiple of 4 and at least 8, got {args.size}")
    for name in ("epochs", "train_images", "val_images", "batch_size", "width"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def check_optional_dependencies(no_figure: bool = False) -> Optional[str]:
    """The demo's optional dependencies (``pip install fastdice[demo]``), checked
    before any work starts: returns why the figure cannot be drawn (matplotlib
    missing), or None. The JSON summary and the table need nothing extra; tqdm
    only draws progress bars."""
    if no_figure:
        return "--no-figure"
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as e:
        return f"matplotlib is not installed ({e}); pip install 'fastdice[demo]' or matplotlib for demo.png"
    return None


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    no_figure = check_optional_dependencies(args.no_figure)
    if no_figure and not args.no_figure:
        print(f"fastdice demo: no figure: {no_figure}; the JSON summary and the table are written", flush=True)
    wall0 = time.perf_counter()
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)

    g = torch.Generator().manual_seed(args.seed)
    train_x, train_y = make_dataset(args.train_images, args.size, g)
    val_x, val_y = make_dataset(args.val_images, args.size, g)
    freq = torch.bincount(torch.cat([train_y.flatten(), val_y.flatten()]), minlength=NUM_CLASSES).double()
    freq = (freq / freq.sum()).tolist()
    data = (train_x.to(device), train_y.to(device), val_x.to(device), val_y.to(device))
    show_idx = _pick_examples(val_y, args.show)
    print(
        f"fastdice demo: {args.train_images} train / {args.val_images} val images {args.size}x{args.size}, "
        f"pixel fractions " + ", ".join(f"{n} {100 * f:.1f}%" for n, f in zip(CLASS_NAMES, freq))
        + f"; UNet width {args.width} ({args.norm} norm), {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, "
        f"device {device}, torch {torch.__version__}",
        flush=True,
    )

    _warm_up(args, data, device)
    timer = LossTimer(device)
    results = {}
    for name in LOSS_NAMES:
        results[name] = train_one(name, args, data, device, show_idx, timer if name == "dice" else None)

    png = os.path.join(args.out, "demo.png")
    if no_figure is None:
        try:
            save_figure(png, results, val_x, val_y, show_idx, args.epochs)
        except Exception as e:  # the runs are done: keep their JSON and table
            no_figure = f"drawing failed: {type(e).__name__}: {e}"
            print(f"fastdice demo: {no_figure}", flush=True)
    if no_figure is not None:
        png = None
    timing = timer.summary()
    wall = time.perf_counter() - wall0
    summary = {
        "config": {k: v for k, v in vars(args).items() if k not in ("no_progress", "no_figure")},
        "device": str(device),
        "torch_version": torch.__version__,
        "fastdice_version": fastdice.__version__,
        "num_threads": torch.get_num_threads(),
        "classes": list(CLASS_NAMES),
        "pixel_fraction": dict(zip(CLASS_NAMES, freq)),
        "dice_options": DICE_OPTIONS,
        "validation_metric": f"fastdice.metrics.{make_validation_metric()!r}",
        "runs": {
            name: {
                "history": res["history"],
                "untrained_mean_fg_dice": res["history"][0]["mean_fg_dice"],
                "final_mean_fg_dice": res["history"][-1]["mean_fg_dice"],
                "final_dice": res["history"][-1]["dice"],
                "train_s": res["train_s"],
            }
            for name, res in results.items()
        },
        "loss_timing": timing,
        "wall_s": wall,
        "figure": png,
        "figure_skipped": no_figure,
    }
    with open(os.path.join(args.out, "demo.json"), "w") as f:
        json.dump(summary, f, indent=2)

    fg = CLASS_NAMES[1:]
    written = f"{png} and " if png else ""
    print(f"\nwrote {written}{os.path.join(args.out, 'demo.json')} ({wall:.1f} s)")
    print(f"untrained model: mean fg Dice {results[LOSS_NAMES[0]]['history'][0]['mean_fg_dice']:.3f}")
    print(f"{'loss':<8} {'mean fg Dice':>12} " + " ".join(f"{c:>8}" for c in fg) + f" {'train s':>8}")
    for name, run in summary["runs"].items():
        print(f"{name:<8} {run['final_mean_fg_dice']:>12.3f} "
              + " ".join(f"{run['final_dice'][c]:>8.3f}" for c in fg) + f" {run['train_s']:>8.1f}")
    if timing["batches"]:
        print(
            f"loss fwd+bwd time: fastdice {timing['fastdice_ms_per_batch']:.2f} ms vs reference "
            f"{timing['reference_ms_per_batch']:.2f} ms per batch "
            f"({timing['speedup_reference_over_fastdice']:.2f} x)"
        )
    return summary


if __name__ == "__main__":
    main()
