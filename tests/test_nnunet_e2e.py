"""End to end with nnU-Net 2.8.1 on the CPU: a tiny 2-D dataset written in nnU-Net's raw format,
planned and preprocessed by nnU-Net, then trained for one short epoch by the stock
``nnUNetTrainer`` and by ``nnUNetTrainerFastDice`` (found the way ``nnUNetv2_train -tr`` finds it,
through ``nnUNet_extTrainer``) from the same seed.

Both runs see the same batches and start from the same weights, so the first iteration's loss
(deep supervision over the network's outputs, as the trainer builds it) must agree to float32
precision; the fastdice run must reach ``checkpoint_final.pth``. Three datasets: label maps
(Dice + CE, fused), label maps with nnU-Net's ignore label (the op's ignore_index) and regions
(Dice + BCE, fused). And the short variant ``nnUNetTrainerFastDice_1epoch`` trains to its final
checkpoint, whose model folder nnU-Net's predictor (as ``nnUNetv2_predict``) loads through
``nnUNet_extTrainer`` (about 75 s alone, with the planning).

Not part of ``make test`` (about 2 minutes on 2 loaded cores, most of it nnU-Net's planning and
preprocessing, which start worker processes): ``make test-nnunet-e2e``, or
``pytest tests/test_nnunet_e2e.py --nnunet-e2e`` (or FASTDICE_NNUNET_E2E=1).
"""

import json
import os
import random

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")
from PIL import Image  # noqa: E402  (nnunetv2 depends on pillow through scikit-image)

import fastdice.nnunet as fd_nnunet  # noqa: E402
from fastdice.compat import nnunet as compat  # noqa: E402

from conftest import assert_close  # noqa: E402

pytestmark = [
    pytest.mark.nnunet_e2e,
    pytest.mark.filterwarnings("ignore:`torch.jit.interface` is deprecated:FutureWarning"),
]

SIZE = 64
CASES = 8
ITERATIONS = 3
SEED = 20251115

#: id -> (name, labels of dataset.json, extra keys of dataset.json)
DATASETS = {
    901: ("FastDiceLabels", {"background": 0, "disk": 1, "square": 2, "diamond": 3}, {}),
    902: ("FastDiceIgnore", {"background": 0, "disk": 1, "square": 2, "diamond": 3, "ignore": 4}, {}),
    903: ("FastDiceRegions", {"background": 0, "any": [1, 2, 3], "square_or_diamond": [2, 3], "diamond": 3},
          {"regions_class_order": [1, 2, 3]}),
}


def _write_dataset(raw: str, dataset_id: int) -> None:
    """CASES grey images SIZE x SIZE (PNG, nnU-Net's NaturalImage2DIO): a disk, a square and a
    diamond (labels 1, 2, 3) of distinct intensities in noise; with an ignore label, a 20 x 20
    block of every label map is unannotated (nnU-Net's sparse-annotation convention)."""
    name, labels, extra = DATASETS[dataset_id]
    folder = os.path.join(raw, f"Dataset{dataset_id:03d}_{name}")
    os.makedirs(os.path.join(folder, "imagesTr"))
    os.makedirs(os.path.join(folder, "labelsTr"))
    rng = np.random.default_rng(dataset_id)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(CASES):
        seg = np.zeros((SIZE, SIZE), np.uint8)
        cy, cx = rng.integers(12, SIZE - 12, 2)
        seg[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(5, 10) ** 2] = 1
        y0, x0 = rng.integers(0, SIZE - 12, 2)
        s = rng.integers(6, 12)
        seg[y0:y0 + s, x0:x0 + s] = 2
        cy, cx = rng.integers(10, SIZE - 10, 2)
        seg[np.abs(yy - cy) + np.abs(xx - cx) < rng.integers(4, 8)] = 3
        image = np.array([0, 90, 160, 230])[seg] + rng.normal(0, 20, seg.shape)
        if "ignore" in labels:
            y0, x0 = rng.integers(0, SIZE - 20, 2)
            seg[y0:y0 + 20, x0:x0 + 20] = labels["ignore"]
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, "imagesTr", f"case{i:02d}_0000.png"))
        Image.fromarray(seg).save(os.path.join(folder, "labelsTr", f"case{i:02d}.png"))
    dataset_json = {"channel_names": {"0": "grey"}, "labels": labels, "numTraining": CASES, "file_ending": ".png",
                    **extra}
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f)


@pytest.fixture(scope="module")
def nnunet_folders(tmp_path_factory):
    """nnUNet_raw / _preprocessed / _results in a tmp dir, the datasets planned and preprocessed
    ('2d' only) by nnU-Net's API, one worker process each step; CPU, one thread, no compile,
    augmentation in the main process."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints, plan_experiments, preprocess)

    base = tmp_path_factory.mktemp("nnunet")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        for kind in ("raw", "preprocessed", "results"):
            os.makedirs(base / kind)
            mp.setenv(f"nnUNet_{kind}", str(base / kind))  # nnunetv2.paths reads them at every use
        mp.setenv("nnUNet_compile", "false")  # nnU-Net never compiles on the CPU; explicit all the same
        mp.setenv("nnUNet_extTrainer", fd_nnunet.EXT_TRAINER_PATH)
        mp.setenv("OMP_NUM_THREADS", "1")  # nnU-Net's worker processes inherit it
        # The planner calls torch.set_num_threads(nnUNet_n_proc_DA): 1 while planning.
        mp.setenv("nnUNet_n_proc_DA", "1")
        ids = sorted(DATASETS)
        for dataset_id in ids:
            _write_dataset(str(base / "raw"), dataset_id)
        extract_fingerprints(ids, num_processes=1, check_dataset_integrity=False, verbose=False,
                             show_progress_bar=False)
        plan_experiments(ids)
        preprocess(ids, configurations=("2d",), num_processes=(1,), show_progress_bar=False)
        # Training: batches built in this process (SingleThreadedAugmenter), so the seed decides them.
        mp.setenv("nnUNet_n_proc_DA", "0")
        torch.set_num_threads(1)
        try:
            yield base
        finally:
            torch.set_num_threads(threads)


def _train(trainer_name: str, dataset_id: int) -> dict:
    """One short epoch (ITERATIONS training iterations, one validation iteration) of the trainer
    as nnUNetv2_train builds it (class looked up by name, plans, fold 0), seeded."""
    from nnunetv2.run.run_training import get_trainer_from_args

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    trainer = get_trainer_from_args(str(dataset_id), "2d", 0, trainer_name, device=torch.device("cpu"))
    trainer.num_iterations_per_epoch = ITERATIONS
    trainer.num_val_iterations_per_epoch = 1
    trainer.num_epochs = 1
    seen = {"loss": [], "data": [], "target": []}
    train_step = trainer.train_step

    def recording_train_step(batch):
        seen["data"].append(batch["data"].clone())
        seen["target"].append([t.clone() for t in batch["target"]])
        out = train_step(batch)
        seen["loss"].append(torch.from_numpy(np.asarray(out["loss"])).to(torch.float32))
        return out

    trainer.train_step = recording_train_step
    trainer.run_training()
    seen["trainer"] = trainer
    return seen


@pytest.mark.parametrize("dataset_id", sorted(DATASETS), ids=[DATASETS[i][0] for i in sorted(DATASETS)])
def test_first_iteration_loss_equals_nnunets(nnunet_folders, dataset_id):
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper as TheirWrapper

    theirs = _train("nnUNetTrainer", dataset_id)
    ours = _train("nnUNetTrainerFastDice", dataset_id)
    stock, fast = theirs["trainer"], ours["trainer"]
    assert type(stock).__name__ == "nnUNetTrainer" and type(fast).__name__ == "nnUNetTrainerFastDice"
    assert isinstance(stock.loss, TheirWrapper) and isinstance(fast.loss, compat.DeepSupervisionWrapper)
    assert fast.loss.weight_factors == pytest.approx(stock.loss.weight_factors, abs=0)
    inner = fast.loss.loss
    if dataset_id == 903:
        assert stock.label_manager.has_regions and isinstance(inner, compat.DC_and_BCE_loss)
    else:
        assert isinstance(inner, compat.DC_and_CE_loss)
        assert inner.ignore_label == (4 if dataset_id == 902 else None) == stock.label_manager.ignore_label

    # The same seed gives the same batches (data and every deep-supervision target) ...
    assert len(ours["loss"]) == len(theirs["loss"]) == ITERATIONS
    for i in range(ITERATIONS):
        assert torch.equal(ours["data"][i], theirs["data"][i]), f"iteration {i}: the batches differ"
        assert len(ours["target"][i]) == len(stock.loss.weight_factors) > 1
        for a, b in zip(ours["target"][i], theirs["target"][i]):
            assert torch.equal(a, b), f"iteration {i}: the targets differ"
    if dataset_id == 902:
        assert (theirs["target"][0][0] == 4).any(), "the batch holds no ignored position"
    # ... and the same initial weights: the first loss is nnU-Net's to float32 precision.
    loss_theirs, loss_ours = theirs["loss"][0], ours["loss"][0]
    print(f"\n{DATASETS[dataset_id][0]}: first-iteration loss nnUNetTrainer {loss_theirs.item():.9g}, "
          f"nnUNetTrainerFastDice {loss_ours.item():.9g}; later iterations "
          f"{[round(x.item(), 7) for x in theirs['loss'][1:]]} vs {[round(x.item(), 7) for x in ours['loss'][1:]]}")
    assert torch.isfinite(loss_theirs) and loss_theirs.abs() > 0.1
    assert_close(loss_ours, loss_theirs, torch.float32, "first-iteration loss")
    # Later iterations start from weights updated by float32-equal (not bit-equal) gradients.
    torch.testing.assert_close(torch.stack(ours["loss"]), torch.stack(theirs["loss"]), rtol=1e-3, atol=1e-4)

    # The fastdice run trained to nnU-Net's final checkpoint.
    path = os.path.join(fast.output_folder, "checkpoint_final.pth")
    assert os.path.isfile(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerFastDice" and checkpoint["current_epoch"] == 1
    assert set(checkpoint["network_weights"]) == set(stock.network.state_dict())
    assert np.isfinite(checkpoint["logging"]["train_losses"]).all()


def test_short_variant_trains_and_its_result_predicts(nnunet_folders, monkeypatch):
    """``-tr nnUNetTrainerFastDice_1epoch`` trains to nnU-Net's final checkpoint, and nnU-Net's
    predictor (what nnUNetv2_predict runs) loads that model folder through nnUNet_extTrainer;
    without the variable, nnU-Net's own 'Could not find requested nnunet trainer'."""
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    seen = _train("nnUNetTrainerFastDice_1epoch", 901)
    trainer = seen["trainer"]
    assert type(trainer).__name__ == "nnUNetTrainerFastDice_1epoch" and trainer.num_epochs == 1
    checkpoint = torch.load(os.path.join(trainer.output_folder, "checkpoint_final.pth"), map_location="cpu",
                            weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerFastDice_1epoch"
    assert set(checkpoint["init_args"]) == {"plans", "configuration", "fold", "dataset_json", "device"}

    raw = os.path.join(str(nnunet_folders / "raw"), "Dataset901_FastDiceLabels")
    image, properties = NaturalImage2DIO().read_images([os.path.join(raw, "imagesTr", "case00_0000.png")])

    def predictor():
        p = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                            allow_tqdm=False)
        p.initialize_from_trained_model_folder(trainer.output_folder_base, use_folds=(0,))
        return p

    segmentation = predictor().predict_single_npy_array(image, {"spacing": properties["spacing"]})
    assert segmentation.shape == image.shape[1:] and set(np.unique(segmentation)) <= {0, 1, 2, 3}
    monkeypatch.delenv("nnUNet_extTrainer")
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer nnUNetTrainerFastDice_1epoch"):
        predictor()
