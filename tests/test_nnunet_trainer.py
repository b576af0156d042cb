"""nnUNetTrainerFastDice builds the loss nnU-Net's trainer builds (same numbers and input
gradients for every configuration its _build_loss distinguishes), and nnU-Net's trainer
lookup finds it (install-trainer into a folder, or nnUNet_extTrainer)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

import fastdice.nnunet as fd_nnunet  # noqa: E402
from fastdice.nnunet import __main__ as cli  # noqa: E402
from fastdice.nnunet.trainer import nnUNetTrainerFastDice  # noqa: E402

from conftest import assert_close  # noqa: E402


class _Stub:
    """The trainer state _build_loss reads (a real trainer needs a preprocessed dataset)."""

    def __init__(self, regions, ignore_label, batch_dice, deep_supervision, is_ddp=False):
        self.label_manager = type("LM", (), {"has_regions": regions, "ignore_label": ignore_label})()
        self.configuration_manager = type(
            "CM", (), {"batch_dice": batch_dice, "pool_op_kernel_sizes": [[1, 1], [2, 2], [2, 2], [2, 2]]}
        )()
        self.enable_deep_supervision = deep_supervision
        self.is_ddp = is_ddp
        self.device = torch.device("cpu")

    def _do_i_compile(self):
        return False

    def _get_deep_supervision_scales(self):
        return nnUNetTrainer._get_deep_supervision_scales(self)


def _inputs(stub, gen):
    c = 3
    sizes = [(16, 12), (8, 6), (4, 3)] if stub.enable_deep_supervision else [(16, 12)]
    if stub.enable_deep_supervision:
        assert len(stub._get_deep_supervision_scales()) == len(sizes)
    xs, ys = [], []
    for h, w in sizes:
        xs.append(3 * torch.randn(2, c, h, w, generator=gen))
        if stub.label_manager.has_regions:
            channels = c + (stub.label_manager.ignore_label is not None)
            ys.append((torch.rand(2, channels, h, w, generator=gen) < 0.4).float())
        else:
            y = torch.randint(0, c, (2, 1, h, w), generator=gen)
            if stub.label_manager.ignore_label is not None:
                y = y.masked_fill(torch.rand(y.shape, generator=gen) < 0.2, stub.label_manager.ignore_label)
            ys.append(y.float())  # nnU-Net's data loader hands float targets
    return xs, ys


def _run(loss, xs, ys, ds):
    xs = [x.clone().requires_grad_(True) for x in xs]
    value = loss(xs, ys) if ds else loss(xs[0], ys[0])
    value.backward(torch.tensor(0.7))
    return value.detach(), [x.grad for x in xs]


@pytest.mark.parametrize("deep_supervision", [True, False], ids=["ds", "nods"])
@pytest.mark.parametrize("batch_dice", [True, False], ids=["batchdice", "sampledice"])
@pytest.mark.parametrize("regions,ignore_label", [(False, None), (False, 3), (True, None), (True, 1)],
                         ids=["labels", "labels-ignore", "regions", "regions-ignore"])
def test_build_loss_equals_nnunets(regions, ignore_label, batch_dice, deep_supervision):
    stub = _Stub(regions, ignore_label, batch_dice, deep_supervision)
    theirs = nnUNetTrainer._build_loss(stub)
    ours = nnUNetTrainerFastDice._build_loss(stub)
    if deep_supervision:
        assert ours.weight_factors == pytest.approx(theirs.weight_factors, abs=0)
        assert ours.weight_factors[-1] == 0
    xs, ys = _inputs(stub, torch.Generator().manual_seed(5))
    ref, got = _run(theirs, xs, ys, deep_supervision), _run(ours, xs, ys, deep_supervision)
    assert_close(got[0], ref[0], torch.float32, "loss")
    for i, (g, r) in enumerate(zip(got[1], ref[1])):
        if r is None:  # the weight-0 output
            assert g is None
            continue
        assert r.abs().max() > 0
        assert_close(g, r, torch.float32, f"grad {i}")


def test_deep_supervision_weights_under_ddp_without_compile():
    from fastdice.nnunet.trainer import deep_supervision_weights

    w = deep_supervision_weights(4, is_ddp=True, compiled=False)
    assert w[-1] > 0 and w.sum() == pytest.approx(1.0)
    expected = np.array([1, 0.5, 0.25, 1e-6])
    assert w == pytest.approx(expected / expected.sum())


def test_install_and_uninstall_into_a_folder(tmp_path):
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    path = cli.install(str(tmp_path))
    assert os.path.basename(path) == "nnUNetTrainerFastDice.py"
    found = recursive_find_python_class(str(tmp_path), "nnUNetTrainerFastDice", None, base_folder=str(tmp_path),
                                        cleanup_imports_from_base_folder=True)
    assert found is nnUNetTrainerFastDice
    cli.install(str(tmp_path))  # idempotent
    assert cli.uninstall(str(tmp_path)) and not os.path.exists(path)
    assert not cli.uninstall(str(tmp_path))
    # A file fastdice did not write is never overwritten nor removed.
    with open(path, "w") as f:
        f.write("class nnUNetTrainerFastDice: pass\n")
    with pytest.raises(SystemExit, match="not written by fastdice"):
        cli.install(str(tmp_path))
    with pytest.raises(SystemExit, match="not written by fastdice"):
        cli.uninstall(str(tmp_path))


def test_cli(tmp_path, capsys):
    assert cli.main(["ext-path"]) == 0
    assert capsys.readouterr().out.strip() == fd_nnunet.EXT_TRAINER_PATH
    with pytest.raises(SystemExit):
        cli.main(["bogus"])
    # As a user runs it: python -m fastdice.nnunet (one subprocess each way).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    run = lambda *a: subprocess.run([sys.executable, "-m", "fastdice.nnunet", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, timeout=120)
    out = run("install-trainer", "--target", str(tmp_path))
    assert out.returncode == 0 and "-tr nnUNetTrainerFastDice" in out.stdout, out.stderr
    assert (tmp_path / "nnUNetTrainerFastDice.py").exists()
    assert run("uninstall-trainer", "--target", str(tmp_path)).returncode == 0
    assert not (tmp_path / "nnUNetTrainerFastDice.py").exists()


def test_nnunet_finds_the_trainer_through_ext_trainer(monkeypatch):
    """nnU-Net's own lookup (as nnUNetv2_train -tr does) with nnUNet_extTrainer = ext-path."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", fd_nnunet.EXT_TRAINER_PATH)
    found = recursive_find_trainer_class_by_name("nnUNetTrainerFastDice")
    assert found.__name__ == "nnUNetTrainerFastDice" and issubclass(found, nnUNetTrainer)
    assert found._build_loss is nnUNetTrainerFastDice._build_loss


# -- nnU-Net's run lengths --------------------------------------------------------------------------

from fastdice.nnunet import trainer as fd_trainer  # noqa: E402


def _variant_names():
    return [name for name in fd_trainer.TRAINER_NAMES if name != "nnUNetTrainerFastDice"]


def test_every_nnunet_epoch_variant_has_a_fastdice_twin():
    from nnunetv2.training.nnUNetTrainer.variants.training_length import nnUNetTrainer_Xepochs as theirs

    their_lengths = {name.split("_")[1] for name in vars(theirs)
                     if name.startswith("nnUNetTrainer_") and name.count("_") == 1}
    assert {name.split("_")[1] for name in _variant_names()} == their_lengths


@pytest.mark.parametrize("name", _variant_names())
def test_epoch_variant_sets_nnunets_length_with_its_signature(name, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.variants.training_length import nnUNetTrainer_Xepochs as theirs

    ours = getattr(fd_trainer, name)
    their_twin = getattr(theirs, name.replace("nnUNetTrainerFastDice_", "nnUNetTrainer_"))
    assert issubclass(ours, nnUNetTrainerFastDice) and ours._build_loss is nnUNetTrainerFastDice._build_loss
    # nnU-Net records the constructor arguments by the names of the signature (KeyError: 'args'
    # for a *args / **kwargs __init__): the real __init__ gets past that with ours, and stops at
    # the next step, reading the (here empty) plans.
    with pytest.raises(KeyError, match="continue_training"):
        ours({}, "2d", 0, {}, torch.device("cpu"))
    assert list(inspect_parameters(ours.__init__)) == list(inspect_parameters(nnUNetTrainer.__init__))
    # The run length nnU-Net's own variant of that name sets.
    monkeypatch.setattr(nnUNetTrainer, "__init__", lambda self, *a, **k: setattr(self, "num_epochs", 1000))
    mine, nnunets = ours.__new__(ours), their_twin.__new__(their_twin)
    ours.__init__(mine, {}, "2d", 0, {}, torch.device("cpu"))
    their_twin.__init__(nnunets, {}, "2d", 0, {}, torch.device("cpu"))
    assert mine.num_epochs == nnunets.num_epochs != 1000


def inspect_parameters(function):
    import inspect

    return inspect.signature(function).parameters


@pytest.mark.parametrize("name", ["nnUNetTrainerFastDice_1epoch", "nnUNetTrainerFastDice_5epochs",
                                  "nnUNetTrainerFastDice_8000epochs"])
def test_nnunet_finds_epoch_variants_through_ext_trainer_and_install(name, monkeypatch, tmp_path):
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", fd_nnunet.EXT_TRAINER_PATH)
    assert recursive_find_trainer_class_by_name(name) is getattr(fd_trainer, name)
    cli.install(str(tmp_path))
    found = recursive_find_python_class(str(tmp_path), name, None, base_folder=str(tmp_path),
                                        cleanup_imports_from_base_folder=True)
    assert found is getattr(fd_trainer, name)


def _cli(*args, env=None):
    env = dict(env or os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "fastdice.nnunet", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_default_command_prints_the_exports_that_predict_needs(tmp_path, monkeypatch):
    """``eval "$(python -m fastdice.nnunet)"`` in a shell, then nnU-Net's trainer lookup (the one
    nnUNetv2_predict runs on a checkpoint's trainer name) finds fastdice's trainer."""
    from fastdice.nnunet.__main__ import export_lines
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env["nnUNet_results"] = str(tmp_path)
    lines = export_lines(env).splitlines()
    assert f'export nnUNet_extTrainer="{fd_nnunet.EXT_TRAINER_PATH}"' in lines
    assert f'export nnUNet_results="{tmp_path}"' in lines
    assert any(line.startswith('# export nnUNet_raw="') for line in lines)  # unset here: shown, not exported
    # Without nnUNet_extTrainer, nnU-Net's own error (what nnUNetv2_predict reports).
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer"):
        recursive_find_trainer_class_by_name("nnUNetTrainerFastDice_5epochs")
    # With the printed lines evaluated by a shell: found (one shell, as a user runs it).
    lookup = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find; "
              "import os; print(os.environ.get('nnUNet_raw')); print(find('nnUNetTrainerFastDice_5epochs').__module__)")
    script = f'eval "$({sys.executable} -m fastdice.nnunet)" && {sys.executable} -c "{lookup}"'
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.splitlines()
    assert out[0] == "None" and out[-1] == "fastdice.nnunet.trainer", done.stdout  # nnUNet_raw stays unset


def test_existing_ext_trainer_folders_are_kept():
    from fastdice.nnunet.__main__ import export_lines

    lines = export_lines({"nnUNet_extTrainer": f"/mine{os.pathsep}{fd_nnunet.EXT_TRAINER_PATH}"}).splitlines()
    assert f'export nnUNet_extTrainer="{fd_nnunet.EXT_TRAINER_PATH}{os.pathsep}/mine"' in lines


@pytest.mark.parametrize("command", ["install-trainer", "uninstall-trainer"])
def test_missing_target_folder_is_a_message(command, tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(SystemExit, match=f"--target {missing} does not exist"):
        cli.main([command, "--target", str(missing)])
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(SystemExit, match="is not a folder"):
        cli.main([command, "--target", str(a_file)])


def test_missing_target_folder_from_the_shell_has_no_traceback(tmp_path):
    missing = tmp_path / "no" / "such"
    out = _cli("install-trainer", "--target", str(missing))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (f"fastdice.nnunet: --target {missing} does not exist; give an existing folder "
                                  f"(nnU-Net's trainer folder is the default: leave --target out), or create it first")
