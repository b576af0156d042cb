"""Every CUDA kernel executed here: the .cu files run on the emulated GPU
(fastdice_dev/emulation.py, csrc/emulation/) through their own host wrappers,
against the CPU op, under two schedules that must agree bit for bit.

What a pass shows: for each case, the launch configuration is legal (block
size, grid limits, shared memory and its opt-in), every thread reaches every
barrier and warp collective it must (no divergence, no deadlock), no access
leaves a tensor or the shared memory (guard pages), no output element is left
unwritten (fresh memory is poisoned, with a different byte per schedule), no
cub temp storage is reused without a barrier, the result does not depend on
the order of threads and blocks, and it equals the CPU op's. What it cannot
show: races that need the GPU's memory model, timing, or the bits of the
GPU's own math library and FMA contractions.

The default matrix is a seeded sample of the full one plus the edge cases;
``pytest tests/test_emulation.py --full`` runs the whole matrix.

Bugs planted on purpose to check that the tier catches them:
fastdice_dev/emulation_mutants.py's MUTANTS (``python scripts/emulation_mutants.py``
applies each to a copy of csrc/, rebuilds and expects this file to fail).
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from fastdice_dev import emulation as ce
from fastdice_dev import kernel_launches
import fastdice  # noqa: F401  (loads torch.ops.fastdice, the CPU oracle)

def pytest_generate_tests(metafunc):
    full = metafunc.config.getoption("--full")
    for name, cases in (("stats_case", stats_cases(full)), ("epilogue_case", epilogue_cases(full)),
                        ("counts_case", counts_cases(full))):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, cases, ids=[case_id(c) for c in cases])


def case_id(case: dict) -> str:
    return "-".join(f"{k}={v}" if not isinstance(v, bool) else (k if v else f"no_{k}") for k, v in case.items()
                    if v not in (None, "none", "contiguous", "clean", 0.0) or k == "activation")


@pytest.fixture(scope="module")
def emu():
    return ce.build()


# ---- the cases -------------------------------------------------------------------

DTYPES = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16}
# (B, C, *spatial): odd sizes, one class, many classes, several blocks per
# sample (4096 float / 8192 half positions per block), 2-D and 3-D, empty.
SHAPES = [(2, 3, 37), (1, 1, 5), (3, 4, 7, 9), (2, 5, 9001), (2, 2, 3, 4, 5), (1, 37, 50), (2, 3, 0), (0, 3, 8)]
# "regions": an int64 label map over labels 0..5 read through one region (a random label set) per channel.
TARGETS = ["label64", "label32", "label_u8", "label1", "dense_f32", "dense_bool", "dense_u8", "onehot_same", "regions"]
REGION_LABELS = 6


def case_regions(c: dict):
    """The op's regions argument of a case (bit sets), or None."""
    if c["target"] != "regions":
        return None
    rng = random.Random(case_id(c))
    return [sum(1 << l for l in rng.sample(range(REGION_LABELS), rng.randint(1, REGION_LABELS - 1)))
            for _ in range(c["shape"][1])]
LAYOUTS = ["contiguous", "channels_last", "offset", "expanded_target"]
SPECIALS = ["clean", "bad_label", "nonfinite", "bad_prob"]
# The loss mask: none, bool (B, *spatial), float (B, 1, *spatial) as a strided view.
MASKS = [None, "bool", "float_view"]


# ---- the host's routing, stated as the test's oracle ----------------------------------
# Which kernel variant the launch code must pick for a case (dice_stats_kernel.cu's
# launch_dice_stats, dice_stats_thread_kernel.cu's dice_stats_partials_per_thread,
# static_switch.h's FD_PIXEL_SWITCH). Every case asserts the launch log against
# it, so a case that silently runs another kernel than it names fails.
KTHREADS, KWARPS = 256, 8  # cuda_utils.cuh: threads and warps per block
THREAD_REGISTER_CLASSES = 4  # dice_stats_thread_kernel.cu kRegisterClasses: sums and exps in registers up to here
BASIC_ACCUMULATED = 3  # StatSet<false>::kAccumulated (kNumBasicStats: sum p*t, sum p, sum t)
THREAD_STATIC_SHARED = 512  # at most: the kernel's cub temp storage and valid count


def thread_kernel_fits(classes: int, static_bytes: int, max_shared: int = ce.H100_SHARED_OPTIN) -> bool:
    """Whether the thread kernel's shared memory (warp sums and per-thread columns, float) fits for this many
    classes; past it the warp kernel runs."""
    slots = BASIC_ACCUMULATED + 2
    return classes * (KWARPS * slots + slots * KTHREADS) * 4 + static_bytes <= max_shared


def thread_kernel_max_classes() -> int:
    """The most classes that fit whatever the kernel's static shared memory (up to THREAD_STATIC_SHARED)."""
    return max(c for c in range(1, 1000) if thread_kernel_fits(c, THREAD_STATIC_SHARED))


def thread_kernel_min_fallback_classes() -> int:
    """The fewest classes that cannot fit even without static shared memory."""
    return min(c for c in range(1, 1000) if not thread_kernel_fits(c, 0))


# The class counts on both sides of the thread kernel's switches: registers up to
# THREAD_REGISTER_CLASSES (C = 4 and 5 in SHAPES), shared-memory columns up to what fits, then the warp kernel.
SHAPES += [(1, thread_kernel_max_classes(), 24), (1, thread_kernel_min_fallback_classes(), 24)]


def _activation(c: dict) -> str:
    return {"none": "kNone", "sigmoid": "kSigmoid", "softmax": "kSoftmax"}[c["activation"]]


def _launches_anything(c: dict) -> bool:
    b, ncls, *spatial = c["shape"]
    return b > 0 and ncls > 0 and math.prod(spatial) > 0


def pixel_variant(c: dict) -> bool:
    return c["activation"] != "none" and c["pixel_loss"] != "none"


def expected_forward_launch(c: dict):
    """(launching function, template arguments it must show) of the statistics kernel, or None."""
    if not _launches_anything(c):
        return None
    ncls = c["shape"][1]
    if (c["strategy"] == "thread" and c["activation"] == "softmax" and not c["full_stats"] and c["dtype"] != "f64"
            and thread_kernel_fits(ncls, THREAD_STATIC_SHARED)):
        return "launch_per_thread", dict(kAct=_activation(c), kFull=False,
                                         kInRegisters=ncls <= THREAD_REGISTER_CLASSES)
    return "launch_dice_stats", dict(kAct=_activation(c), kFull=c["full_stats"], kPixel=pixel_variant(c))


def expected_backward_launch(c: dict):
    if not _launches_anything(c):
        return None
    return "launch_dice_stats_backward", dict(kAct=_activation(c), kFull=c["full_stats"], kPixel=pixel_variant(c))


def route_key(c: dict) -> tuple:
    """The kernel path a case exercises: the variant and the branches taken inside it."""
    launch = expected_forward_launch(c)
    variant = (launch[0], tuple(sorted(launch[1].items()))) if launch else None
    return (variant, c["activation"], c["pixel_loss"], bool(c["focal_gamma"]), c["full_stats"])


_ACCEPTED: dict = {}


def host_accepts(c: dict) -> bool:
    """Whether the op's shared validation (dice_problem.cpp: the same for the CPU and the CUDA host code) takes
    the case's options: asked of the CPU op on a tiny input, not restated here."""
    key = (c["activation"], c["pixel_loss"], c["focal_gamma"], c["target"], c["ignore_index"], c["full_stats"])
    if key not in _ACCEPTED:
        tiny = dict(c, shape=(1, 2, 3), layout="contiguous", special="clean", mask=None, dtype="f64")
        x, t, _, _ = make_stats_inputs(tiny, torch.Generator().manual_seed(0))
        try:
            torch.ops.fastdice.dice_stats(x, t, c["activation"], c["full_stats"], c["ignore_index"], c["pixel_loss"],
                                          c["focal_gamma"], None, case_regions(tiny))
            _ACCEPTED[key] = True
        except (RuntimeError, ValueError):
            _ACCEPTED[key] = False
    return _ACCEPTED[key]


def valid_stats_case(c: dict) -> bool:
    # What the case generator can express (not routing rules): a layout needs its rank,
    # a planted value needs a position and, for a probability, activation 'none'.
    if c["layout"] == "channels_last" and len(c["shape"]) not in (4, 5):
        return False
    if c["special"] in ("bad_label", "bad_prob") and (c["shape"][0] == 0 or math.prod(c["shape"][2:]) == 0):
        return False
    if c["special"] == "bad_prob" and c["activation"] != "none":
        return False
    if c["target"] == "regions" and c["shape"][1] > 32:  # the op's limit, tested in tests/test_regions.py
        return False
    return host_accepts(c)


def stats_cases(full: bool) -> list:
    axes = dict(strategy=["warp", "thread"], dtype=list(DTYPES), activation=["none", "sigmoid", "softmax"],
                target=TARGETS,
                pixel_loss=["none", "cross_entropy", "binary_cross_entropy"], focal_gamma=[0.0, 2.0],
                full_stats=[False, True], ignore_index=[None, 2], shape=SHAPES, layout=LAYOUTS, special=SPECIALS,
                mask=MASKS)
    every = [dict(zip(axes, v)) for v in itertools.product(*axes.values())]
    every = [c for c in every if valid_stats_case(c)]
    rng = random.Random(16)
    chosen = rng.sample(every, min(len(every), 3000)) if full else []
    # Every value of every axis and every kernel path the host can reach (route_key),
    # filled up to 90 cases by default; --full adds them to its random sample.
    rng.shuffle(every)
    seen, routes = set(), set()
    all_values = sum(len(v) for v in axes.values())
    all_routes = {route_key(c) for c in every}
    for c in every:
        values = {(k, str(v)) for k, v in c.items()}
        if values - seen or route_key(c) not in routes or (not full and len(chosen) < 90):
            chosen.append(c)
            seen |= values
            routes.add(route_key(c))
        if len(seen) == all_values and routes == all_routes and (full or len(chosen) >= 90):
            break
    assert routes == all_routes, "the sample misses a kernel path"
    # The launch limits: more samples than the grid's y limit (emulated as 3
    # unless --full, where the real 65,535 is crossed), and many classes.
    chosen.append(dict(strategy="warp", dtype="f32", activation="softmax", target="label64", pixel_loss="cross_entropy",
                       focal_gamma=0.0, full_stats=True, ignore_index=2, shape=(65540, 2, 3) if full else (7, 3, 33),
                       layout="contiguous", special="bad_label", grid_y=65535 if full else 3))
    chosen.append(dict(strategy="thread", dtype="f32", activation="softmax", target="label64", pixel_loss="cross_entropy",
                       focal_gamma=0.0, full_stats=True, ignore_index=2, shape=(7, 3, 33),
                       layout="contiguous", special="bad_label", grid_y=3))
    chosen.append(dict(strategy="thread", dtype="bf16", activation="softmax", target="label64",
                       pixel_loss="cross_entropy", focal_gamma=0.0, full_stats=False, ignore_index=None,
                       shape=(2, 14, 9001), layout="contiguous", special="clean"))
    # An empty batch whose target gradient (float32 target) differs from the statistics' dtype (float64).
    chosen.append(dict(strategy="thread", dtype="f64", activation="none", target="dense_f32", pixel_loss="none",
                       focal_gamma=0.0, full_stats=True, ignore_index=None, shape=(0, 3, 8), layout="contiguous",
                       special="clean", mask="float_view"))
    # Region targets as nnU-Net trains them: sigmoid + BCE, ignore label, loss mask, several blocks per sample.
    for strategy, dtype in (("warp", "f32"), ("thread", "bf16")):
        chosen.append(dict(strategy=strategy, dtype=dtype, activation="sigmoid", target="regions",
                           pixel_loss="binary_cross_entropy", focal_gamma=0.0, full_stats=True, ignore_index=2,
                           shape=(2, 3, 9001), layout="contiguous", special="bad_label", mask="bool"))
        chosen.append(dict(strategy=strategy, dtype="f64", activation="softmax", target="regions",
                           pixel_loss="cross_entropy", focal_gamma=2.0, full_stats=False, ignore_index=None,
                           shape=(3, 4, 7, 9), layout="channels_last", special="clean"))
    for strategy in ("warp", "thread"):
        chosen.append(dict(strategy=strategy, dtype="f16", activation="sigmoid", target="dense_f32",
                           pixel_loss="binary_cross_entropy",
                           focal_gamma=2.0, full_stats=True, ignore_index=None,
                           shape=(2, 700 if full else 130, 20), layout="offset", special="clean"))
    return chosen


def make_stats_inputs(c: dict, gen: torch.Generator):
    dtype = DTYPES[c["dtype"]]
    b, ncls, *spatial = c["shape"]
    act = c["activation"]
    if act == "none":
        x = torch.rand(c["shape"], generator=gen, dtype=torch.float64)
    else:
        x = 3 * torch.randn(c["shape"], generator=gen, dtype=torch.float64)
    kind = c["target"]
    labels = torch.randint(0, REGION_LABELS if kind == "regions" else ncls, (b, *spatial), generator=gen)
    if c["ignore_index"] is not None and labels.numel():
        drop = torch.rand(labels.shape, generator=gen) < 0.2
        labels = torch.where(drop, torch.full_like(labels, c["ignore_index"]), labels)
    if kind == "regions":
        t = labels
    elif kind.startswith("label"):
        t = labels.to({"label64": torch.int64, "label32": torch.int32, "label_u8": torch.uint8,
                       "label1": torch.int64}[kind])
        if kind == "label1":
            t = t.unsqueeze(1)
    else:
        onehot = torch.nn.functional.one_hot(labels.clamp(0, max(ncls - 1, 0)), ncls).movedim(-1, 1)
        if kind == "dense_f32":
            t = torch.rand(c["shape"], generator=gen)
        elif kind == "dense_bool":
            t = onehot.bool()
        elif kind == "dense_u8":
            t = onehot.to(torch.uint8)
        else:
            t = onehot.to(dtype)
    bad = None
    if c["special"] == "bad_label" and x.numel():
        # sample 0 gets one invalid target value at a random position.
        pos = int(torch.randint(0, math.prod(spatial), (1,), generator=gen))
        if kind == "regions":
            t.view(b, -1)[0, pos] = 64 + 3  # region labels lie in [0, 64)
        elif kind.startswith("label"):
            flat = t.view(b, -1) if kind != "label1" else t.view(b, -1)
            flat[0, pos] = ncls + 3 if kind != "label_u8" else 250
        else:
            flat = t.reshape(b, ncls, -1)
            flat[0, 0, pos] = 3 if t.dtype != torch.bool else True
            if t.dtype == torch.bool:  # a bool cannot be out of range: no bad value
                bad = None
        bad = 0 if t.dtype != torch.bool else None
    if c["special"] == "bad_prob":
        # activation 'none' with a logit among the probabilities, at a position that is not ignored.
        pos = int(torch.randint(0, math.prod(spatial), (1,), generator=gen))
        x.view(b, ncls, -1)[0, ncls - 1, pos] = 1.25
        if kind.startswith("label") or kind == "regions":
            t.view(b, -1)[0, pos] = 0
        bad = 0
    if c["special"] == "nonfinite" and x.numel() and act != "none":
        flat = x.view(b, ncls, -1)
        flat[0, 0, 0] = float("nan")
        flat[-1, -1, -1] = float("inf")
        if flat.shape[-1] > 1:
            flat[0, -1, 1] = float("-inf")
    x = x.to(dtype)
    layout = c["layout"]
    if layout == "channels_last":
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
        if not kind.startswith("label") and kind != "regions":
            t = t.contiguous(memory_format=fmt)
    elif layout == "offset":
        # odd storage offsets: views into larger buffers
        xb = torch.empty(x.numel() + 3, dtype=dtype)
        x = xb[3:].view_as(x).copy_(x) if x.numel() else x
        tb = torch.empty(t.numel() + 1, dtype=t.dtype)
        t = tb[1:].view_as(t).copy_(t) if t.numel() else t
    elif layout == "expanded_target" and not kind.startswith("label") and kind != "regions" and b > 0:
        t = t[:1].expand_as(t) if bad is None else t
    mask = None
    if c.get("mask") is not None:
        keep = torch.rand((b, *spatial), generator=gen) < 0.7
        if c["special"] in ("bad_label", "bad_prob") and keep.numel():
            keep.view(b, -1)[0, pos] = True  # the planted value stays where it is read
        dropped = (~keep).reshape(b, -1).nonzero() if keep.numel() else []
        if (kind.startswith("label") or kind == "regions") and len(dropped) and kind != "label_u8":
            # A masked-out position may hold any label (an unannotated region): never poisons.
            sb, sp = dropped[-1].tolist()
            t.view(b, -1)[sb, sp] = ncls + 7 if kind != "regions" else 64 + 7
        if c["mask"] == "bool":
            mask = keep
        else:
            buf = torch.zeros((b, 1, *spatial, 2))
            buf[..., 1] = keep.unsqueeze(1).float()
            mask = buf[..., 1]  # every other float: a view with a spatial stride of 2
    return x, t, bad, mask


def compare(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float, atol_scale: float):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a = actual.double()
    e = expected.double()
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    assert torch.equal(nan_a, nan_e), f"{what}: NaN at {nan_a.nonzero()[:5].tolist()} vs {nan_e.nonzero()[:5].tolist()}"
    inf_e = torch.isinf(e)
    assert torch.equal(torch.isinf(a), inf_e) and torch.equal(a[inf_e], e[inf_e]), f"{what}: infinities differ"
    fin = torch.isfinite(e)
    if fin.any():
        scale = float(e[fin].abs().max())
        torch.testing.assert_close(a[fin], e[fin], rtol=rtol, atol=atol_scale * max(scale, 1e-30),
                                   msg=lambda m: f"{what}: {m}")


# Emulated vs CPU: the sums run in another order, so float32 statistics agree
# to accumulated rounding, not to one ulp.
RTOL = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-4, 1e-5), torch.float16: (2e-3, 1e-3),
        torch.bfloat16: (1.6e-2, 8e-3)}


def run_both_schedules(emu, fn, grid_y=65535, max_shared=ce.H100_SHARED_OPTIN):
    """fn(emu) under both schedules (inputs copied into guarded memory by fn); the outputs must agree bitwise."""
    outs = []
    for schedule in ce.SCHEDULES:
        ce.configure(emu, schedule, max_grid_y=grid_y, max_shared_optin=max_shared)
        outs.append(fn())
        report = emu.take_report()
        assert "violation" not in report, report
    for a, b in zip(outs[0], outs[1]):
        assert torch.equal(ce.bits(a), ce.bits(b)), "the two schedules disagree bitwise"
    return outs[0]


def assert_launched(log, expected, then=None):
    """The launch log shows exactly the expected variant (and the kernel that follows it), or nothing."""
    launches = kernel_launches.parse_all(log)
    if expected is None:
        assert not launches, f"expected no launch, got {[str(l) for l in launches]}"
        return
    launcher, params = expected
    want = [launcher] + ([then] if then else [])
    assert [l.launcher for l in launches] == want, f"launched {[str(l) for l in launches]}, expected {want}"
    assert launches[0].matches(launcher, **params), f"launched {launches[0]}, expected {launcher} with {params}"


def test_dice_stats_forward_and_backward(emu, stats_case, monkeypatch):
    c = stats_case
    monkeypatch.setenv("FASTDICE_CUDA_FORWARD", c["strategy"])
    gen = torch.Generator().manual_seed(hash(case_id(c)) % (2**31))
    x, t, bad, mask = make_stats_inputs(c, gen)
    args = (c["activation"], c["full_stats"], c["ignore_index"], c["pixel_loss"], c["focal_gamma"])
    b = x.shape[0]
    # The CPU op raises on invalid targets; the GPU poisons the sample with NaN instead.
    clean = [i for i in range(b) if i != bad]
    mask_clean = mask[clean] if mask is not None else None
    regions = case_regions(c)
    try:
        ref = torch.ops.fastdice.dice_stats(x[clean], t[clean], *args, mask_clean, regions)
    except (RuntimeError, ValueError) as err:
        with pytest.raises(type(err)):
            ce.configure(emu, 0)
            emu.dice_stats(emu.guarded_copy(x), emu.guarded_copy(t), *args,
                           emu.guarded_copy(mask) if mask is not None else None, regions)
        return
    grad_stats = torch.randn(b, x.shape[1] if x.dim() > 1 else 1, 11, generator=gen, dtype=ref.dtype)
    # A dense float target also gets its gradient, from the same pass.
    target_grad = t.dtype.is_floating_point and t.shape == x.shape

    def run():
        xg, tg = emu.guarded_copy(x), emu.guarded_copy(t)
        mg = emu.guarded_copy(mask) if mask is not None else None
        emu.take_launch_log(True)
        stats = emu.dice_stats(xg, tg, *args, mg, regions)
        assert_launched(emu.take_launch_log(True), expected_forward_launch(c), then="reduce_partials")
        grad, grad_target = emu.dice_stats_backward(emu.guarded_copy(grad_stats), xg, tg, *args, target_grad, mg,
                                                    regions)
        assert_launched(emu.take_launch_log(False), expected_backward_launch(c))
        return stats, grad, grad_target

    stats, grad, grad_target = run_both_schedules(emu, run, grid_y=c.get("grid_y", 65535))
    rtol, atol = RTOL[ref.dtype]
    compare(stats[clean], ref, "stats", rtol, atol)
    ref_grad, ref_grad_target = torch.ops.fastdice.dice_stats_backward(
        grad_stats[clean], x[clean], t[clean], *args, target_grad, mask_clean, regions)
    grtol, gatol = RTOL[x.dtype]
    assert grad.stride() == ref_grad.stride() or grad.numel() == 0 or grad[clean].stride() == ref_grad.stride()
    if (c["activation"] == "softmax" and x.dim() > 1 and x.shape[1] == 1
            and c["pixel_loss"] != "binary_cross_entropy"):
        # Softmax over one class is 1 everywhere: both gradients are 0 up to rounding noise,
        # which differs between the two summation orders (the binary cross-entropy reads
        # the logit itself, so its gradient is not 0).
        g_clean = grad[clean]
        limit = 1e-12 if x.dtype == torch.float64 else 1e-5
        assert (g_clean.double().abs().nan_to_num(0.0) <= limit).all() and torch.equal(
            torch.isnan(g_clean), torch.isnan(ref_grad)), "one-class softmax gradient"
    else:
        compare(grad[clean], ref_grad, "grad_input", grtol, gatol)
    if target_grad:
        assert grad_target.dtype == t.dtype and grad_target.shape == t.shape
        trtol, tatol = RTOL[t.dtype] if t.dtype in RTOL else RTOL[torch.float32]
        compare(grad_target[clean], ref_grad_target, "grad_target", max(trtol, grtol), max(tatol, gatol))
    else:
        assert grad_target.numel() == 0
    if bad is not None:
        assert torch.isnan(stats[bad]).all(), "a sample with an invalid target must be NaN"


# ---- the epilogue ------------------------------------------------------------------

def epilogue_cases(full: bool) -> list[dict]:
    axes = dict(dtype=["f32", "f64"], shape=[(2, 3), (1, 1), (300, 2), (3, 300), (0, 3)],
                pooling=["global", "batch", "sample"], include_background=[True, False],
                form=["plain", "squared", "soft_label"], jaccard=[False, True], log_loss=[False, True],
                reduction=["mean", "sum", "none"], ce_family=["none", "cross_entropy", "binary_cross_entropy"],
                ce_label_map=[True, False], weight=[False, True])
    every = [dict(zip(axes, v)) for v in itertools.product(*axes.values())]
    every = [c for c in every if not (c["ce_family"] != "none" and c["reduction"] == "none")
             and not (c["ce_family"] == "none" and not c["ce_label_map"])]
    rng = random.Random(17)
    return every if full else rng.sample(every, 40)


def test_dice_loss_from_stats(emu, epilogue_case):
    c = epilogue_case
    from test_epilogue import random_stats

    gen = torch.Generator().manual_seed(hash(case_id(c)) % (2**31))
    b, ncls = c["shape"]
    dtype = DTYPES[c["dtype"]]
    stats = random_stats(b, ncls, dtype=dtype, generator=gen)
    weight = torch.rand(ncls, generator=gen, dtype=torch.float64).to(dtype) if c["weight"] else None
    ce_weight = torch.rand(ncls, generator=gen, dtype=torch.float64).to(dtype) if c["ce_family"] != "none" else None
    opts = (c["pooling"], c["include_background"], c["form"], c["jaccard"], 1e-5, 1e-5, c["log_loss"], 1e-6,
            c["reduction"], 0.7, 0.4 if c["ce_family"] != "none" else 0.0, c["ce_family"], c["ce_label_map"],
            0 if c["ce_label_map"] else 17 * b, 0.1 if c["ce_family"] == "cross_entropy" else 0.0)
    ref = torch.ops.fastdice.dice_loss_from_stats(stats, weight, ce_weight, *opts)
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64).to(dtype) * 1.7

    def guarded(t):
        return emu.guarded_copy(t) if t is not None else None

    def run():
        out = emu.dice_loss_from_stats(guarded(stats), guarded(weight), guarded(ce_weight), *opts)
        g = emu.dice_loss_from_stats_backward(guarded(grad), guarded(stats), guarded(weight), guarded(ce_weight), *opts)
        return out, g

    out, g = run_both_schedules(emu, run)
    rtol, atol = RTOL[dtype]
    compare(out, ref, "loss", rtol, atol)
    ref_g = torch.ops.fastdice.dice_loss_from_stats_backward(grad, stats, weight, ce_weight, *opts)
    compare(g, ref_g, "grad_stats", rtol, atol)


# ---- the confusion counts ----------------------------------------------------------

def counts_cases(full: bool) -> list[dict]:
    axes = dict(dtype=list(DTYPES), mode=["multiclass", "multilabel", "binary"],
                target=["label64", "label_u8", "dense_f32", "dense_bool"], ignore_index=[None, 2],
                shape=[(2, 3, 37), (1, 1, 5), (3, 4, 7, 9), (2, 5, 9001), (1, 37, 50), (2, 3, 0)],
                layout=["contiguous", "channels_last", "offset"], special=["clean", "bad_label"])
    every = [dict(zip(axes, v)) for v in itertools.product(*axes.values())]
    every = [c for c in every if not (c["layout"] == "channels_last" and len(c["shape"]) != 4)
             and not (c["mode"] == "binary" and c["shape"][1] != 1)
             and not (c["ignore_index"] is not None and not c["target"].startswith("label"))
             and not (c["special"] == "bad_label" and math.prod(c["shape"][2:]) == 0)]
    rng = random.Random(18)
    chosen = rng.sample(every, min(len(every), 1500)) if full else rng.sample(every, 30)
    # The classes the shared memory allows (about 2,400 on an H100) and one past them.
    chosen.append(dict(dtype="f32", mode="multiclass", target="label64", ignore_index=None,
                       shape=(1, 2421, 3), layout="contiguous", special="clean"))
    chosen.append(dict(dtype="f32", mode="multiclass", target="label64", ignore_index=None,
                       shape=(1, 2422, 3), layout="contiguous", special="too_many_classes"))
    return chosen


def test_confusion_counts(emu, counts_case):
    c = dict(counts_case)
    gen = torch.Generator().manual_seed(hash(case_id(c)) % (2**31))
    sc = dict(c, activation="sigmoid", pixel_loss="none", focal_gamma=0.0, full_stats=False,
              target=c["target"] if c["target"] != "dense_f32" else "onehot_same",
              special=c["special"] if c["special"] != "too_many_classes" else "clean")
    if c["mode"] == "binary" and c["target"].startswith("label"):
        sc["shape"] = (c["shape"][0], 2, *c["shape"][2:])  # labels in {0, 1}
    x, t, bad, _ = make_stats_inputs(sc, gen)
    if c["mode"] == "binary":
        x = x[:, :1]
        if not c["target"].startswith("label"):
            t = t[:, :1]
    args = (c["mode"], 0.25, c["ignore_index"])
    if c["special"] == "too_many_classes":
        ce.configure(emu, 0)
        with pytest.raises(ValueError, match="shared memory"):
            emu.confusion_counts(emu.guarded_copy(x), emu.guarded_copy(t), *args)
        return
    b = x.shape[0]
    clean = [i for i in range(b) if i != bad]
    try:
        ref = torch.ops.fastdice.confusion_counts(x[clean], t[clean], *args)
    except (RuntimeError, ValueError) as err:
        with pytest.raises(type(err)):
            ce.configure(emu, 0)
            emu.confusion_counts(emu.guarded_copy(x), emu.guarded_copy(t), *args)
        return
    (counts,) = run_both_schedules(emu, lambda: (emu.confusion_counts(emu.guarded_copy(x), emu.guarded_copy(t), *args),))
    assert torch.equal(counts[clean], ref)
    if bad is not None:
        assert (counts[bad] == -1).all()


# ---- the limits ----------------------------------------------------------------------

def test_shared_memory_limit_is_a_clear_error(emu):
    """Past the device's shared memory the op says what the limit is and what to do."""
    ce.configure(emu, 0, max_shared_optin=64 * 1024)
    x = torch.randn(1, 300, 4)
    t = torch.randint(0, 300, (1, 4))
    with pytest.raises(ValueError, match=r"shared memory.*64|65536"):
        emu.dice_stats(emu.guarded_copy(x), emu.guarded_copy(t), "softmax", True, None, "cross_entropy", 0.0, None,
                       None)
