"""The benchmark's deep-supervision workload is nnU-Net's training loss: the loss nnUNetTrainer
builds (weights, Dice + CE configuration) on targets downsampled as nnU-Net's data pipeline does;
its nnU-Net providers agree with that loss and with each other; other providers do not take it."""

import pytest
import torch

pytest.importorskip("nnunetv2")
from benchmarks.bench import Workload, workloads  # noqa: E402
from benchmarks.providers import PROVIDERS, NotApplicable  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

from conftest import assert_close  # noqa: E402

WORKLOAD = Workload("tiny_ds", (2, 4, 32, 32, 32), loss="dice_ce", ds_levels=4)


class _Trainer:
    """What nnUNetTrainer._build_loss reads, for a 3-D plan of 6 stages (5 poolings by 2: the
    full-resolution output and 4 downsampled ones), batch Dice as the 3d_fullres plans have it."""

    label_manager = type("LM", (), {"has_regions": False, "ignore_label": None})()
    configuration_manager = type("CM", (), {"batch_dice": True,
                                            "pool_op_kernel_sizes": [[1, 1, 1]] + [[2, 2, 2]] * 5})()
    enable_deep_supervision = True
    is_ddp = False
    device = torch.device("cpu")

    def _do_i_compile(self):
        return False

    def _get_deep_supervision_scales(self):
        return nnUNetTrainer._get_deep_supervision_scales(self)


def _value_and_grads(fn, xs, ts):
    xs = [x.detach().clone().requires_grad_(True) for x in xs]
    loss = fn(xs, ts)
    loss.backward()
    return loss.detach(), [x.grad for x in xs]


def test_the_workload_is_the_trainers_loss():
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

    trainer = _Trainer()
    theirs = nnUNetTrainer._build_loss(trainer)
    scales = trainer._get_deep_supervision_scales()
    assert len(scales) == len(WORKLOAD.level_shapes()) == 5
    assert list(theirs.weight_factors) == pytest.approx(WORKLOAD.ds_weights(), abs=1e-15)
    assert WORKLOAD.ds_weights()[-1] == 0

    xs, ts = WORKLOAD.make_inputs()
    assert [tuple(x.shape) for x in xs] == WORKLOAD.level_shapes()
    # nnU-Net's data pipeline: one sample's (1, *spatial) int16 map downsampled per scale.
    for b in range(WORKLOAD.shape[0]):
        expected = DownsampleSegForDSTransform(scales)(segmentation=ts[0][b])["segmentation"]
        for got, want in zip(ts, expected):
            assert got.dtype == want.dtype == torch.int16 and torch.equal(got[b], want)

    ref = _value_and_grads(theirs, xs, ts)
    for name in ("nnunet", "fastdice_nnunet"):
        loss, grads = _value_and_grads(PROVIDERS[name](WORKLOAD), xs, ts)
        assert_close(loss, ref[0], torch.float32, f"{name}: loss")
        assert grads[-1] is None  # the weight-0 output is not read
        for i, (g, r) in enumerate(zip(grads[:-1], ref[1][:-1])):
            assert_close(g, r, torch.float32, f"{name}: grad {i}")


def test_other_providers_do_not_take_deep_supervision():
    takers = set()
    for name, make in PROVIDERS.items():
        try:
            make(WORKLOAD)
            takers.add(name)
        except NotApplicable:
            pass
    assert takers == {"nnunet", "nnunet_compiled", "fastdice_nnunet", "floor_read", "floor_exp"}


def test_listed_in_quick_and_full_runs():
    for device in ("cpu", "cuda"):
        for quick in (True, False):
            ds = [w for w in workloads(device, quick) if w.ds_levels]
            assert len(ds) == 1 and ds[0].ds_levels == 4 and ds[0].loss == "dice_ce"
