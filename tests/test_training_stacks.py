"""fastdice inside training stacks: DDP global Dice (gloo), torch.compile with
dynamic shapes, autocast, pickling and state_dict."""

import copy
import dataclasses
import io
import os
import pickle

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastdice
from fastdice import reference

from conftest import assert_close

GLOBAL_SHAPE = (5, 3, 9, 8)


def _global_batch():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(GLOBAL_SHAPE, generator=g, dtype=torch.float64)
    t = torch.randint(0, 3, (GLOBAL_SHAPE[0], *GLOBAL_SHAPE[2:]), generator=g)
    t[1] = 255  # a fully ignored sample
    return x, t


def _rank_slices(world):
    # Uneven slices; with 3 ranks the last one gets an empty batch.
    bounds = {2: [0, 3, 5], 3: [0, 2, 5, 5]}[world]
    return [slice(bounds[r], bounds[r + 1]) for r in range(world)]


OPTIONS = {"activation": "softmax", "pooling": "batch", "include_background": False, "ignore_index": 255}


def _worker(rank, world, store_dir, pooling):
    dist.init_process_group("gloo", init_method=f"file://{store_dir}/store", rank=rank, world_size=world)
    try:
        x, t = _global_batch()
        sl = _rank_slices(world)[rank]
        xr = x[sl].clone().requires_grad_(True)
        loss = fastdice.DiceLoss(distributed=True, **dict(OPTIONS, pooling=pooling))(xr, t[sl])
        loss.backward(torch.tensor(1.3, dtype=loss.dtype))
        torch.save({"loss": loss.detach(), "grad": xr.grad}, os.path.join(store_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("pooling", ["batch", "global"])
def test_distributed_equals_single_process_on_concatenated_batch(world, pooling, tmp_path):
    mp.spawn(_worker, args=(world, str(tmp_path), pooling), nprocs=world, join=True)
    x, t = _global_batch()
    x.requires_grad_(True)
    expected = reference.dice_loss(x, t, **dict(OPTIONS, pooling=pooling))
    expected.backward(torch.tensor(1.3, dtype=expected.dtype))
    for rank, sl in enumerate(_rank_slices(world)):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert_close(got["loss"], expected.detach(), torch.float64, f"rank {rank} loss")
        # Each rank's input gradient is world_size x its share of the single-process
        # gradient; DDP's averaging over ranks divides by world_size.
        if x.grad[sl].numel():
            assert_close(got["grad"] / world, x.grad[sl], torch.float64, f"rank {rank} grad")
        else:
            assert got["grad"].shape == x.grad[sl].shape


def test_distributed_needs_pooled_statistics():
    with pytest.raises(ValueError, match="distributed=True needs pooling"):
        fastdice.DiceLoss(distributed=True, pooling="sample")


def test_compile_dynamic_shapes_no_recompile():
    torch._dynamo.reset()
    loss_fn = fastdice.DiceLoss(activation="softmax", pooling="sample", ignore_index=-1)
    compiled = torch.compile(loss_fn, fullgraph=True, dynamic=True, backend="aot_eager")
    from torch._dynamo.utils import counters

    counters.clear()
    # Sizes 0 and 1 are specialized by dynamo itself (a torch rule), so they are left out.
    for b, h in [(2, 16), (3, 16), (4, 20), (5, 9)]:
        x = torch.randn(b, 3, h, h, requires_grad=True)
        t = torch.randint(-1, 3, (b, h, h))
        loss = compiled(x, t)
        loss.backward()
        expected = reference.dice_loss(x, t, activation="softmax", pooling="sample", ignore_index=-1)
        assert_close(loss, expected, torch.float32, f"B={b}")
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def test_autocast_bf16_cpu_with_grad_scaler():
    conv = torch.nn.Conv2d(4, 3, 3, padding=1)
    x = torch.randn(2, 4, 64, 64)
    t = torch.randint(0, 3, (2, 64, 64))
    loss_fn = fastdice.DiceLoss(activation="softmax", pooling="batch")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(x)
        assert logits.dtype == torch.bfloat16
        loss = loss_fn(logits, t)
    assert loss.dtype == torch.float32
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler.scale(loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
    expected = reference.dice_loss(logits.detach().float(), t, activation="softmax", pooling="batch")
    assert_close(loss, expected, torch.bfloat16, "autocast loss")


def test_half_input_large_sums_do_not_overflow():
    # Sums far above float16's 65504 must stay finite: accumulation is float32.
    x = torch.full((1, 2, 200_000), 4.0, dtype=torch.float16).requires_grad_(True)
    t = torch.zeros(1, 200_000, dtype=torch.int64)
    stats = fastdice.dice_stats(x, t, "sigmoid", False, None)
    assert stats.dtype == torch.float32 and torch.isfinite(stats).all() and stats[0, 0, 1] > 65504
    loss = fastdice.dice_loss(x, t, activation="sigmoid", pooling="sample")
    (loss * 2.0**16).backward()
    assert torch.isfinite(x.grad).all()


def test_module_pickles_saves_and_prints():
    loss_fn = fastdice.DiceLoss(activation="softmax", pooling="sample", weight=[1.0, 2.0, 0.5], ignore_index=9)
    assert "weight" in loss_fn.state_dict() and list(loss_fn.state_dict()) == ["weight"]
    r = repr(loss_fn)
    assert "activation='softmax'" in r and "pooling='sample'" in r and "weight=[1.0, 2.0, 0.5]" in r
    x = torch.randn(2, 3, 6, 6)
    t = torch.randint(0, 3, (2, 6, 6))
    # The options pickle their fields only (what a call passes to the ops is derived again on loading).
    assert set(loss_fn.opts.__getstate__()) == {f.name for f in dataclasses.fields(loss_fn.opts)}
    for clone in (pickle.loads(pickle.dumps(loss_fn)), _torch_save_load(loss_fn), copy.deepcopy(loss_fn)):
        assert torch.equal(clone(x, t), loss_fn(x, t))
    fresh = fastdice.DiceLoss(activation="softmax", pooling="sample", weight=[1.0, 1.0, 1.0], ignore_index=9)
    fresh.load_state_dict(loss_fn.state_dict())
    assert torch.equal(fresh(x, t), loss_fn(x, t))


def _torch_save_load(module):
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=str)
def test_autocast_cuda_with_grad_scaler(amp_dtype):
    conv = torch.nn.Conv3d(2, 4, 3, padding=1).cuda()
    x = torch.randn(2, 2, 40, 40, 40, device="cuda")
    t = torch.randint(0, 4, (2, 40, 40, 40), device="cuda")
    loss_fn = fastdice.DiceLoss(activation="softmax", pooling="global")
    with torch.autocast("cuda", dtype=amp_dtype):
        logits = conv(x)
        assert logits.dtype == amp_dtype
        loss = loss_fn(logits, t)
    assert loss.dtype == torch.float32
    scaler = torch.amp.GradScaler("cuda")
    scaler.scale(loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
    expected = reference.dice_loss(logits.detach().float(), t, activation="softmax", pooling="global")
    assert_close(loss, expected, amp_dtype, "autocast loss")
