"""The custom ops themselves: opcheck, gradcheck, determinism, torch.compile,
and which kernels the build registered."""

import pytest
import torch

import fastdice
from fastdice import reference

from conftest import DEVICES, assert_close, random_logits, random_target

OPTION_SETS = [
    {},
    {"pooling": "sample", "include_background": False},
    {"squared": True, "pooling": "batch"},
    {"soft_label": True, "pooling": "sample", "reduction": "sum"},
    {"jaccard": True, "log_loss": True, "pooling": "sample"},
    {"weight": [1.0, 0.25, 3.0], "pooling": "batch"},
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", OPTION_SETS, ids=str)
@pytest.mark.parametrize("target_kind", ["dense", "label_ignore"])
@pytest.mark.parametrize("activation", ["none", "sigmoid", "softmax"])
def test_gradcheck(activation, target_kind, options, device):
    shape = (2, 3, 5, 4)
    ignore = 7 if target_kind == "label_ignore" else None
    kw = dict(options, activation=activation)
    if ignore is not None:
        kw["ignore_index"] = ignore
    x = random_logits(shape, torch.float64, device, activation)
    if activation == "none":
        x = 0.05 + 0.9 * x  # keep |p - t| and |p| away from their kinks
    t = random_target(target_kind.replace("_ignore", ""), shape, device, ignore_index=ignore)
    if target_kind == "dense":
        t = t.double()
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: fastdice.dice_loss(a, t, **kw), (x,), eps=1e-6, atol=1e-8)


def _op_samples(device):
    for activation in ("none", "sigmoid", "softmax"):
        for full in (False, True):
            x = random_logits((2, 3, 6, 5), torch.float32, device, activation).requires_grad_(True)
            yield (x, random_target("dense", (2, 3, 6, 5), device), activation, full, None)
            yield (x, random_target("label", (2, 3, 6, 5), device, ignore_index=4), activation, full, 4)


def _transposed_sample(device):
    """Spatial dims that cannot be viewed as one: the gradient is allocated contiguous."""
    x = torch.randn(2, 3, 5, 6, device=device).transpose(2, 3).requires_grad_(True)
    return (x, torch.randint(0, 3, (2, 6, 5), device=device), "softmax", False, None)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for args in list(_op_samples(device)) + [_transposed_sample(device)]:
        torch.library.opcheck(torch.ops.fastdice.dice_stats.default, args)
        grad_stats = torch.randn(2, 3, fastdice.NUM_STATS, device=device)
        x = args[0].detach()
        torch.library.opcheck(torch.ops.fastdice.dice_stats_backward.default, (grad_stats, x) + args[1:])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("target_kind", ["dense", "label"])
def test_bitwise_deterministic(target_kind, device):
    x = torch.randn(3, 4, 96, 97, device=device, requires_grad=True)
    t = random_target(target_kind, (3, 4, 96, 97), device)
    loss_fn = fastdice.DiceLoss(activation="softmax", pooling="sample", squared=True)
    runs = []
    for _ in range(2):
        x.grad = None
        loss = loss_fn(x, t)
        loss.backward()
        runs.append((loss.detach().clone(), x.grad.clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("target_kind", ["dense", "label"])
def test_cpu_result_independent_of_thread_count(target_kind):
    x = torch.randn(2, 3, 130, 129, requires_grad=True)
    t = random_target(target_kind, (2, 3, 130, 129), "cpu")
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            x.grad = None
            loss = fastdice.dice_loss(x, t, activation="softmax", pooling="batch")
            loss.backward()
            results.append((loss.detach().clone(), x.grad.clone()))
    finally:
        torch.set_num_threads(before)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


# Spatial sizes around the CPU's 8-lane vectors, 16-position groups, 512-position
# tiles and 4096-position chunks, so that every partial-vector, partial-group and
# partial-tile branch runs (40: whole vectors, a partial group).
_EDGE_SPATIAL = [1, 7, 31, 33, 40, 511, 513, 4095, 4097 + 37]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("pixel_loss", ["none", "cross_entropy"])
@pytest.mark.parametrize("classes", [1, 2, 5, 17])
@pytest.mark.parametrize("spatial", _EDGE_SPATIAL)
def test_float_softmax_labels_match_float64(spatial, classes, pixel_loss, dtype, device):
    """float32 / 16-bit softmax + label maps, with or without the cross-entropy
    sums (the CPU's dedicated SIMD path), against the float64 kernels (the
    general path) on the same values: stats and gradient, with ignored labels.
    The statistics accumulate in float32 either way; the 16-bit gradient is
    rounded once."""
    g = torch.Generator().manual_seed(spatial * 31 + classes)
    x64 = (3 * torch.randn(2, classes, spatial, generator=g, dtype=torch.float64)).to(device)
    t = torch.randint(0, classes, (2, spatial), generator=g).to(device)
    t[torch.rand(2, spatial, generator=g).to(device) < 0.2] = -5
    x = x64.to(dtype)
    args = ("softmax", False, -5, pixel_loss, 0.0)
    stats = torch.ops.fastdice.dice_stats(x, t, *args)
    stats64 = torch.ops.fastdice.dice_stats(x.double(), t, *args)
    assert_close(stats, stats64, torch.float32, "stats")
    grad_stats = torch.randn(stats64.shape, generator=g, dtype=torch.float64).to(device)
    grad, _ = torch.ops.fastdice.dice_stats_backward(grad_stats.float(), x, t, *args)
    grad64, _ = torch.ops.fastdice.dice_stats_backward(grad_stats, x.double(), t, *args)
    assert grad.dtype == dtype
    if classes == 1:  # softmax over one class is 1 everywhere: the gradient is 0 up to rounding
        assert grad.abs().max() < 1e-6 and grad64.abs().max() < 1e-12
    else:
        assert_close(grad, grad64, dtype, "grad")
    assert (grad.permute(1, 0, 2)[:, t == -5] == 0).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("pixel_loss", ["none", "cross_entropy"])
@pytest.mark.parametrize("classes", [3, 6])  # the CPU backward's two strategies: up to 4 classes, and more
def test_float_softmax_labels_non_finite_logit(classes, pixel_loss, bad):
    """One non-finite logit in the float32 softmax + label path gives the
    gradient the float64 kernels (the general path) give: NaN over its
    position's classes for NaN and +inf, finite for -inf (that class's
    probability is 0), every other position untouched."""
    g = torch.Generator().manual_seed(classes)
    x64 = 3 * torch.randn(2, classes, 37, generator=g, dtype=torch.float64)
    t = torch.randint(0, classes, (2, 37), generator=g)
    t[torch.rand(2, 37, generator=g) < 0.2] = -5
    x64[1, classes - 1, 20] = bad
    t[1, 20] = 0
    args = ("softmax", False, -5, pixel_loss, 0.0)
    grad_stats = torch.randn(2, classes, fastdice._ops.NUM_STATS, generator=g, dtype=torch.float64)
    grad, _ = torch.ops.fastdice.dice_stats_backward(grad_stats.float(), x64.float(), t, *args)
    grad64, _ = torch.ops.fastdice.dice_stats_backward(grad_stats, x64, t, *args)
    nan = grad64.isnan()
    assert torch.equal(grad.isnan(), nan)
    assert nan[1, :, 20].all() == (bad != float("-inf")) and nan.sum() == (0 if bad == float("-inf") else classes)
    assert_close(grad[~nan], grad64[~nan], torch.float32, "grad")


_ISA_SCRIPT = """
import sys, torch, fastdice
g = torch.Generator().manual_seed(0)
out = []
for shape, act, dtype, pixel in [((2, 4, 1000), "softmax", torch.float32, "none"),
                                 ((2, 4, 1000), "softmax", torch.float32, "cross_entropy"),
                                 ((2, 4, 1000), "softmax", torch.bfloat16, "cross_entropy"),
                                 ((2, 6, 1000), "softmax", torch.float32, "cross_entropy"),
                                 ((2, 6, 1000), "softmax", torch.bfloat16, "none"),
                                 ((2, 3, 777), "sigmoid", torch.float32, "binary_cross_entropy"),
                                 ((2, 3, 777), "softmax", torch.float64, "none")]:
    x = (2 * torch.randn(shape, generator=g)).to(dtype)
    t = torch.randint(0, shape[1], (shape[0], shape[2]), generator=g)
    t[:, ::7] = -1
    args = (act, True, -1, pixel, 0.0) if pixel == "none" else (act, False, -1, pixel, 0.0)
    stats = torch.ops.fastdice.dice_stats(x, t, *args)
    grad, _ = torch.ops.fastdice.dice_stats_backward(torch.randn(stats.shape, generator=g, dtype=stats.dtype), x, t, *args)
    out.append((stats, grad))
torch.save(out, sys.argv[1])
"""


def test_baseline_and_avx2_kernels_agree(tmp_path):
    """The CPU kernels exist twice (baseline ISA, AVX2 + FMA), chosen at run
    time; the suite runs the best one, so the other is compared here."""
    import os
    import subprocess
    import sys

    results = {}
    for isa in ("baseline", "auto"):
        env = dict(os.environ, FASTDICE_CPU_ISA=isa)
        path = tmp_path / f"{isa}.pt"
        subprocess.run([sys.executable, "-c", _ISA_SCRIPT, str(path)], check=True, env=env)
        results[isa] = torch.load(path)
    for (s_base, g_base), (s_auto, g_auto) in zip(results["baseline"], results["auto"]):
        assert_close(s_base, s_auto, s_auto.dtype, "stats")
        assert_close(g_base, g_auto, g_auto.dtype, "grad")


@pytest.mark.parametrize("device", DEVICES)
def test_second_derivative_raises(device):
    """First derivatives with create_graph=True work; differentiating them
    again raises instead of treating the gradient as a constant."""
    x = torch.randn(2, 3, 8, device=device, requires_grad=True)
    t = torch.randint(0, 3, (2, 8), device=device)
    loss = fastdice.dice_loss(x, t, activation="softmax")
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    expected = torch.autograd.grad(reference.dice_loss(x, t, activation="softmax"), x)[0]
    assert_close(grad, expected, torch.float32, "first derivative")
    with pytest.raises(RuntimeError, match="derivative for fastdice::dice_stats_backward is not implemented"):
        grad.sum().backward()


def test_functorch_transforms_raise():
    """torch.func is not supported (README, Limits): it raises, never returns a number."""
    x = torch.randn(2, 3, 8)
    t = torch.randint(0, 3, (2, 8))
    with pytest.raises(RuntimeError, match="functorch transforms"):
        torch.func.grad(lambda a: fastdice.dice_loss(a, t, activation="softmax"))(x)


@pytest.mark.parametrize("device", DEVICES)
def test_forward_saves_no_input_sized_tensor(device):
    x = torch.randn(2, 3, 40, 40, device=device, requires_grad=True)
    t = torch.randint(0, 3, (2, 40, 40), device=device)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = fastdice.dice_loss(x, t, activation="softmax", pooling="sample")
    big = [s for s in saved if s.numel() >= x.numel()]
    # Only references to the caller's own input and target may be kept.
    assert all(s.data_ptr() in (x.data_ptr(), t.data_ptr()) for s in big), [tuple(s.shape) for s in big]
    loss.backward()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend, device):
    loss_fn = fastdice.DiceLoss(activation="softmax", pooling="sample", include_background=False, weight=[1.0, 2.0, 3.0])

    torch._dynamo.reset()
    compiled = torch.compile(loss_fn, fullgraph=True, backend=backend)
    x = torch.randn(2, 3, 16, 16, device=device, requires_grad=True)
    t = torch.randint(0, 3, (2, 16, 16), device=device)
    loss = compiled(x, t)
    loss.backward()
    grad = x.grad.clone()
    x.grad = None
    expected = reference.dice_loss(x, t, activation="softmax", pooling="sample", include_background=False, weight=[1.0, 2.0, 3.0])
    expected.backward()
    assert_close(loss, expected, torch.float32, "compiled loss")
    assert_close(grad, x.grad, torch.float32, "compiled grad")


def test_kernels_registered_for_build():
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    for op in ("fastdice::dice_stats", "fastdice::dice_stats_backward"):
        assert has(op, "CPU")
        if fastdice.build_config()["cuda"]:
            assert has(op, "CUDA"), f"{op}: extension built with CUDA but no CUDA kernel is registered"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_cuda_matches_cpu(activation, dtype):
    shape = (2, 5, 33, 65)
    x = random_logits(shape, dtype, "cpu", activation)
    t = random_target("label", shape, "cpu", ignore_index=9)
    kw = {"activation": activation, "pooling": "sample", "reduction": "none", "squared": True, "ignore_index": 9}
    results = []
    for device in ("cpu", "cuda"):
        xd = x.to(device).requires_grad_(True)
        loss = fastdice.dice_loss(xd, t.to(device), **kw)
        loss.backward(torch.linspace(0.5, 2, loss.numel(), device=device).reshape(loss.shape))
        results.append((loss.detach().cpu(), xd.grad.cpu()))
    assert_close(results[1][0], results[0][0], dtype, "loss")
    assert_close(results[1][1], results[0][1], dtype, "grad")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_out_of_range_label_poisons_with_nan():
    x = torch.randn(2, 3, 8, 8, device="cuda", requires_grad=True)
    t = torch.randint(0, 3, (2, 8, 8), device="cuda")
    t[1, 2, 3] = 3
    stats = fastdice.dice_stats(x, t, "softmax", False, None)
    assert torch.isfinite(stats[0]).all() and torch.isnan(stats[1]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_capture():
    x = torch.randn(2, 4, 32, 32, device="cuda", requires_grad=True)
    t = torch.randint(0, 4, (2, 32, 32), device="cuda")
    loss_fn = fastdice.DiceLoss(activation="softmax", pooling="sample")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):  # warm up outside the graph
            x.grad = None
            loss_fn(x, t).backward()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    x.grad = None
    with torch.cuda.graph(graph):
        static_loss = loss_fn(x, t)
        static_loss.backward()
    with torch.no_grad():
        x.copy_(torch.randn_like(x))
    graph.replay()
    expected = reference.dice_loss(x.detach(), t, activation="softmax", pooling="sample")
    assert_close(static_loss, expected, torch.float32, "graph replay")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "classes,dtype,full", [(96, torch.float64, True), (192, torch.float32, True), (512, torch.float32, False)]
)
def test_cuda_many_classes_shared_memory(classes, dtype, full):
    """Class counts whose shared-memory needs cross the 48 KB default limit."""
    x = torch.randn(2, classes, 9, 7, dtype=dtype)
    t = torch.randint(0, classes, (2, 9, 7))
    expected = fastdice.dice_stats(x, t, "softmax", full, None)
    got = fastdice.dice_stats(x.cuda(), t.cuda(), "softmax", full, None).cpu()
    assert_close(got, expected, dtype, "stats")


@pytest.mark.parametrize("device", DEVICES)
def test_single_inf_logit_gives_nan_like_torch_softmax(device):
    x = torch.randn(1, 3, 8, device=device)
    x[0, 1, 4] = float("inf")
    t = torch.randint(0, 3, (1, 8), device=device)
    stats = fastdice.dice_stats(x, t, "softmax", False, None)
    assert torch.isnan(torch.softmax(x, 1)[0, :, 4]).all()
    assert torch.isnan(stats[0, :, :2]).all()  # NaN reaches every class, as in torch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_out_of_range_label_does_not_spill_into_neighbours():
    x = torch.randn(1, 3, 16, device="cuda", requires_grad=True)
    t = torch.randint(0, 3, (1, 16), device="cuda")
    t[0, 5] = 7  # out of range
    t[0, 4] = 9  # ignored, next to it
    stats = fastdice.dice_stats(x, t, "softmax", False, 9)
    (grad_x,) = torch.autograd.grad(stats.sum(), x)
    assert torch.isnan(grad_x[0, :, 5]).all()
    assert (grad_x[0, :, 4] == 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "activation,pixel_loss", [("softmax", "cross_entropy"), ("softmax", "binary_cross_entropy"), ("sigmoid", "binary_cross_entropy")]
)
@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("target_kind", ["label", "dense"])
def test_cuda_matches_cpu_with_pixel_loss(target_kind, gamma, activation, pixel_loss, dtype):
    """The fused cross-entropy / focal sums and their gradient: CUDA against the CPU kernels."""
    x = (3 * torch.randn(3, 5, 33, 17)).to(dtype)
    if target_kind == "label":
        t = torch.randint(0, 5, (3, 33, 17))
        t[0, :3] = 250
        ignore = 250
    else:
        t = torch.rand(3, 5, 33, 17)
        ignore = None
    grad_stats = torch.randn(3, 5, fastdice.NUM_STATS)
    results = []
    for device in ("cpu", "cuda"):
        xi = x.to(device).requires_grad_()
        stats = fastdice.dice_stats(xi, t.to(device), activation, True, ignore, pixel_loss, gamma)
        (stats * grad_stats.to(device)).sum().backward()
        results.append((stats.detach().cpu(), xi.grad.cpu()))
    assert_close(results[1][0], results[0][0], dtype if dtype == torch.float64 else torch.float32, "stats")
    assert_close(results[1][1], results[0][1], dtype, "grad")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("strategy", ["warp", "thread"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("classes", [2, 4, 5, 14])  # the thread kernel: registers up to 4 classes, columns past it
@pytest.mark.parametrize("pixel_loss,gamma", [("none", 0.0), ("cross_entropy", 0.0), ("cross_entropy", 2.0),
                                              ("binary_cross_entropy", 0.0), ("binary_cross_entropy", 2.0)])
def test_cuda_forward_strategies_match_cpu_and_repeat_bitwise(strategy, dtype, classes, pixel_loss, gamma,
                                                              monkeypatch):
    """Both CUDA forward strategies (FASTDICE_CUDA_FORWARD) equal the CPU op, are deterministic, and run their
    own kernel: the thread strategy serves softmax with the basic statistics in 16/32-bit floats (registers up
    to 4 classes); the launch log shows which variant ran."""
    # The developer tools live beside the package in a checkout, not in an installed copy.
    kernel_launches = pytest.importorskip("fastdice_dev.kernel_launches")

    monkeypatch.setenv("FASTDICE_CUDA_FORWARD", strategy)
    x = random_logits((3, classes, 37, 129), dtype, "cpu", "softmax")
    t = random_target("label", (3, classes, 37, 129), "cpu", ignore_index=classes + 1)
    args = ("softmax", False, classes + 1, pixel_loss, gamma)
    expected = torch.ops.fastdice.dice_stats(x, t, *args)
    torch.ops.fastdice_debug.launch_log(True)
    runs = [torch.ops.fastdice.dice_stats(x.cuda(), t.cuda(), *args).cpu() for _ in range(2)]
    launches = kernel_launches.parse_all(torch.ops.fastdice_debug.launch_log(False))
    if strategy == "thread" and dtype != torch.float64:
        variant = ("launch_per_thread", dict(kInRegisters=classes <= 4))
    else:
        variant = ("launch_dice_stats", dict(kPixel=pixel_loss != "none"))
    assert [l.launcher for l in launches] == [variant[0], "reduce_partials"] * 2, [str(l) for l in launches]
    assert launches[0].matches(variant[0], kAct="kSoftmax", kFull=False, **variant[1]), str(launches[0])
    assert torch.equal(runs[0], runs[1]), "not bitwise reproducible"
    assert_close(runs[0], expected, torch.float32 if dtype != torch.float64 else dtype, f"{strategy} stats")


def test_launch_log_parser_reads_the_compilers_spelling():
    """The entry nvcc 13 writes for a launcher (GCC's spelling, the anonymous namespace named by nvcc)."""
    # The developer tools live beside the package in a checkout, not in an installed copy.
    kernel_launches = pytest.importorskip("fastdice_dev.kernel_launches")

    entry = ("dice_stats_thread_kernel.cu: at::Tensor fastdice::cuda::_GLOBAL__N__6202fa37_4_t_cu_main::"
             "launch_per_thread(const at::Tensor&, const fastdice::DiceProblem&, const at::TensorOptions&) "
             "[with scalar_t = c10::BFloat16; acc_t = float; fastdice::Activation kAct = "
             "fastdice::Activation::kSoftmax; bool kFull = false; bool kInRegisters = true]")
    launch = kernel_launches.parse(entry)
    assert launch.file == "dice_stats_thread_kernel.cu" and launch.launcher == "launch_per_thread"
    assert launch.params == dict(scalar_t="BFloat16", acc_t="float", kAct="kSoftmax", kFull="false",
                                 kInRegisters="true")
    assert launch.matches("launch_per_thread", kInRegisters=True, kAct="kSoftmax")
    assert not launch.matches("launch_per_thread", kInRegisters=False)


def test_launch_log_is_empty_for_cpu_ops():
    """The launch log records CUDA launches only, and only while enabled."""
    torch.ops.fastdice_debug.launch_log(True)
    torch.ops.fastdice.dice_stats(torch.rand(1, 2, 5), torch.randint(0, 2, (1, 5)), "none", False, None, "none", 0.0)
    assert list(torch.ops.fastdice_debug.launch_log(False)) == []
