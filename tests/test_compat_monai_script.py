"""torch.jit.script of fastdice.compat.monai's classes.

TorchScript cannot compile the fused path's Python, so each class's
``__prepare_scriptable__`` hands torch.jit.script MONAI's own module built with
the same constructor arguments and buffers. These tests script our module,
save and load it, and compare the loaded module's output and input gradient
(grad_output != 1) with our eager module's on fresh random inputs.
"""

import copy
import pickle
import sys
import warnings

import pytest
import torch

monai_losses = pytest.importorskip("monai.losses")
import monai.losses.dice  # noqa: E402
import monai.losses.tversky  # noqa: E402

from fastdice.compat import monai as ours  # noqa: E402

# torch.jit.script is deprecated in torch 2.14 (a FutureWarning on every call); not ours to test.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

RTOL = 1e-5  # float32, relative; the absolute part is RTOL times the largest expected magnitude

SHAPE_2D = (2, 3, 8, 8)
SHAPE_3D = (2, 3, 12, 12, 12)  # 10368 elements: above EXACT_FOCAL_MAX_NUMEL, the focal sums are fused


def _label_target(shape, generator):
    return torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=generator).float()


def _onehot_target(shape, generator):
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=generator)
    return torch.nn.functional.one_hot(labels, shape[1]).movedim(-1, 1).float()


def _sigmoid_target(shape, generator):
    return (torch.rand(shape, generator=generator) > 0.5).float()


# (class name, constructor arguments, input shape, target maker)
CASES = [
    ("DiceLoss", {}, SHAPE_2D, _onehot_target),
    ("DiceLoss", dict(softmax=True, to_onehot_y=True, weight=[0.5, 1.0, 2.0], squared_pred=True), SHAPE_3D,
     _label_target),
    ("DiceLoss", dict(sigmoid=True, include_background=False, jaccard=True, batch=True, reduction="none"), SHAPE_2D,
     _sigmoid_target),
    ("DiceLoss", dict(softmax=True, to_onehot_y=True, ignore_index=1, reduction="sum"), SHAPE_2D, _label_target),
    ("GeneralizedDiceLoss", dict(sigmoid=True), SHAPE_2D, _sigmoid_target),
    ("GeneralizedDiceLoss", dict(softmax=True, to_onehot_y=True, w_type="simple", batch=True), SHAPE_3D,
     _label_target),
    ("TverskyLoss", dict(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7), SHAPE_3D, _label_target),
    ("TverskyLoss", dict(sigmoid=True, include_background=False, reduction="none"), SHAPE_2D, _sigmoid_target),
    ("DiceCELoss", dict(softmax=True, to_onehot_y=True, weight=torch.tensor([0.5, 1.0, 2.0]), label_smoothing=0.1),
     SHAPE_3D, _label_target),
    ("DiceCELoss", dict(sigmoid=True, lambda_dice=0.7, lambda_ce=1.3, reduction="sum"), SHAPE_2D, _onehot_target),
    # (MONAI 1.6.1's FocalLoss with alpha does not script: its alpha_arg is first a float, then None.)
    ("DiceFocalLoss", dict(sigmoid=True, gamma=1.5, weight=[0.5, 1.0, 2.0]), SHAPE_3D, _sigmoid_target),
    ("DiceFocalLoss", dict(softmax=True, to_onehot_y=True, include_background=False, lambda_focal=0.5), SHAPE_2D,
     _label_target),
    ("GeneralizedDiceFocalLoss", dict(softmax=True, to_onehot_y=True, weight=[0.5, 1.0, 2.0]), SHAPE_3D,
     _label_target),
    ("GeneralizedDiceFocalLoss", dict(sigmoid=True, gamma=0.5, reduction="sum"), SHAPE_2D, _sigmoid_target),
]
CASE_IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(CASES)]


def _script_save_load(module, tmp_path):
    scripted = torch.jit.script(module)
    path = tmp_path / "loss.ts"
    torch.jit.save(scripted, str(path))
    return torch.jit.load(str(path))


def _value_and_grad(module, x, target, grad_output):
    x = x.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's single-channel warnings are not what is tested here
        out = module(x, target)
    out.backward(grad_output)
    return out.detach(), x.grad


def _assert_close(actual, expected, what):
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * max(scale, 1e-30), msg=lambda m: f"{what}: {m}")


def _compare(eager, loaded, shape, make_target, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator)
    target = make_target(shape, generator)
    with torch.no_grad():
        out_shape = eager(x, target).shape
    grad_output = torch.rand(out_shape, generator=generator) + 0.5  # != 1
    expected, expected_grad = _value_and_grad(eager, x, target, grad_output)
    actual, actual_grad = _value_and_grad(loaded, x, target, grad_output)
    assert actual.shape == expected.shape
    _assert_close(actual, expected, "loss")
    _assert_close(actual_grad, expected_grad, "input gradient")


@pytest.mark.parametrize("name, kwargs, shape, make_target", CASES, ids=CASE_IDS)
def test_script_save_load_matches_eager(name, kwargs, shape, make_target, tmp_path):
    eager = getattr(ours, name)(**kwargs)
    loaded = _script_save_load(eager, tmp_path)
    # What was scripted is MONAI's own class of that name.
    monai_cls = getattr(monai.losses.tversky if name == "TverskyLoss" else monai.losses.dice, name)
    assert loaded.original_name == name
    assert isinstance(eager.__prepare_scriptable__(), monai_cls)
    for seed in range(3):  # fresh inputs after scripting
        _compare(eager, loaded, shape, make_target, seed)


def test_script_keeps_loaded_buffers_and_training_flag(tmp_path):
    """Buffers come from the module (a load_state_dict after construction included)."""
    eager = ours.DiceFocalLoss(softmax=True, to_onehot_y=True, weight=[1.0, 1.0, 1.0])
    eager.load_state_dict({
        "dice.class_weight": torch.tensor([0.2, 1.0, 3.0]), "focal.class_weight": torch.tensor([2.0, 0.5, 1.0]),
    })
    eager.eval()
    prepared = eager.__prepare_scriptable__()
    assert not prepared.training
    assert prepared.dice.class_weight is eager.dice.class_weight
    assert prepared.focal.class_weight is eager.focal.class_weight
    loaded = _script_save_load(eager, tmp_path)
    _compare(eager, loaded, SHAPE_3D, _label_target, 0)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_script_after_copy(how, tmp_path):
    eager = ours.TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.2, beta=0.8)
    copied = copy.deepcopy(eager) if how == "deepcopy" else pickle.loads(pickle.dumps(eager))
    loaded = _script_save_load(copied, tmp_path)
    _compare(eager, loaded, SHAPE_2D, _label_target, 0)


def test_script_finds_monai_class_while_name_is_rebound(monkeypatch):
    """tests/monai_upstream/conftest.py rebinds monai.losses.<name> (and monai.losses.dice.<name>) to ours while a
    test file imports: scripting still builds MONAI's class."""
    real = monai.losses.dice.DiceLoss
    for module in (monai_losses, monai.losses.dice):
        monkeypatch.setattr(module, "DiceLoss", ours.DiceLoss)
        monkeypatch.setattr(module, "DiceFocalLoss", ours.DiceFocalLoss)
    assert type(ours.DiceLoss(sigmoid=True).__prepare_scriptable__()) is real
    prepared = ours.DiceFocalLoss(sigmoid=True).__prepare_scriptable__()
    assert type(prepared).__module__ == "monai.losses.dice"
    torch.jit.script(prepared)  # MONAI's DiceFocalLoss built our DiceLoss inside: scripting prepares it too


def test_script_without_monai_raises_clear_error(monkeypatch):
    for name in ("monai", "monai.losses", "monai.losses.dice", "monai.losses.tversky"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    for cls in (ours.DiceLoss, ours.TverskyLoss, ours.DiceCELoss):
        with pytest.raises(RuntimeError, match="TorchScript needs monai installed"):
            torch.jit.script(cls())


def test_script_refuses_attribute_changed_after_construction():
    eager = ours.DiceLoss(sigmoid=True)
    eager.smooth_nr = 0.0
    with pytest.raises(RuntimeError, match="smooth_nr"):
        torch.jit.script(eager)
    combined = ours.DiceCELoss(softmax=True)
    combined.dice.jaccard = True
    with pytest.raises(RuntimeError, match="dice.jaccard"):
        torch.jit.script(combined)


def test_script_refuses_subclass():
    class MyDice(ours.DiceLoss):
        def forward(self, input, target):
            return 2 * super().forward(input, target)

    with pytest.raises(RuntimeError, match="subclasses fastdice.compat.monai.DiceLoss"):
        torch.jit.script(MyDice())


def test_masked_dice_loss_is_not_scriptable():
    with pytest.raises(RuntimeError, match="MaskedDiceLoss is not scriptable"):
        torch.jit.script(ours.MaskedDiceLoss(sigmoid=True))


@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
def test_script_generalized_dice_weights(w_type, tmp_path):
    """MONAI's scripted GeneralizedDiceLoss takes uniform weights whatever w_type (str(Weight.X) compiles to
    "Enum<Weight.X>"); ours scripts with the w_type's weights."""
    for cls in (ours.GeneralizedDiceLoss, ours.GeneralizedDiceFocalLoss):
        eager = cls(softmax=True, to_onehot_y=True, w_type=w_type)
        loaded = _script_save_load(eager, tmp_path)
        _compare(eager, loaded, SHAPE_2D, _label_target, 0)


def test_eager_module_unchanged_by_scripting(tmp_path):
    eager = ours.DiceLoss(softmax=True, to_onehot_y=True)
    _script_save_load(eager, tmp_path)
    assert type(eager) is ours.DiceLoss
    assert eager.__dict__["_fd_init_arguments"] == dict(softmax=True, to_onehot_y=True)


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.loss = ours.DiceLoss(sigmoid=True)

    def forward(self, x, target):
        return self.loss(x, target)


def test_script_of_a_container_replaces_the_loss_in_it():
    """torch's __prepare_scriptable__ recursion assigns the prepared submodule back (documented); a deepcopy keeps
    the fused loss."""
    model = _Model()
    torch.jit.script(copy.deepcopy(model))
    assert type(model.loss) is ours.DiceLoss
    torch.jit.script(model)
    assert type(model.loss) is monai.losses.dice.DiceLoss
