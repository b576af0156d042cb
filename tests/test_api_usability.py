"""The public API explains itself: signatures, reprs, error messages, warnings
that point at the caller, inputs without elements, per-term values (issue 14)."""

import copy
import inspect
import os
import pathlib
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

import fastdice
from fastdice import reference
from fastdice.compat import monai as fmonai
from fastdice.compat import smp as fsmp
from fastdice.options import DiceOptions

from conftest import assert_close, random_logits

NATIVE_CLASSES = [fastdice.DiceLoss, fastdice.DiceCELoss, fastdice.DiceFocalLoss, fastdice.TverskyLoss,
                  fastdice.GeneralizedDiceLoss]
NATIVE_CALLABLES = NATIVE_CLASSES + [fastdice.dice_loss, reference.dice_loss, reference.DiceLoss]


def _ids(objs):
    return [f"{o.__module__.split('.')[-1]}.{o.__name__}" for o in objs]


# ----------------------------------------------------------------------------
# Item 6: explicit, typed, documented keyword arguments; foreign names explained
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("obj", NATIVE_CALLABLES, ids=_ids(NATIVE_CALLABLES))
def test_signature_is_explicit_typed_and_documented(obj):
    sig = inspect.signature(obj)
    params = {n: p for n, p in sig.parameters.items() if n not in ("input", "target")}
    assert params, f"{obj.__name__} shows no arguments"
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in sig.parameters.values()), sig
    for name, p in params.items():
        assert p.kind == p.KEYWORD_ONLY, f"{name} is not keyword-only"
        assert p.default is not p.empty, f"{name} has no default"
        if name != "process_group":
            assert p.annotation is not p.empty, f"{name} has no type annotation"
            assert name in (obj.__doc__ or ""), f"{obj.__name__}'s docstring does not document {name}"
    for common in ("activation", "pooling", "include_background", "ignore_index", "smooth_nr", "reduction"):
        assert common in params


# fastdice imported from a source checkout (not from an installed copy, where
# pyproject.toml and setup.py do not sit beside the package).
SOURCE_CHECKOUT = (pathlib.Path(fastdice.__file__).parent.parent / "setup.py").is_file()
needs_source_checkout = pytest.mark.skipif(not SOURCE_CHECKOUT, reason="fastdice is an installed copy, not a checkout")


def test_package_is_typed():
    assert (pathlib.Path(fastdice.__file__).parent / "py.typed").is_file()


@needs_source_checkout
def test_py_typed_is_package_data():
    pyproject = (pathlib.Path(fastdice.__file__).parent.parent / "pyproject.toml").read_text()
    assert '"py.typed"' in pyproject


FOREIGN = {
    "softmax": ("activation='softmax'", "fastdice.compat.monai"),
    "sigmoid": ("activation='sigmoid'", "fastdice.compat.monai"),
    "to_onehot_y": ("label map", "fastdice.compat.monai"),
    "batch": ("pooling='batch'", "fastdice.compat.monai"),
    "squared_pred": ("squared=True", "fastdice.compat.monai"),
    "from_logits": ("activation=", "fastdice.compat.smp"),
    "smooth": ("smooth_nr", "fastdice.compat.smp"),
}


@pytest.mark.parametrize("obj", NATIVE_CLASSES, ids=_ids(NATIVE_CLASSES))
@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_foreign_argument_names_the_native_option_and_compat(obj, name):
    native, compat = FOREIGN[name]
    with pytest.raises(TypeError) as info:
        obj(**{name: True})
    text = str(info.value)
    assert repr(name) in text and native in text and compat in text, text
    assert "DiceOptions" not in text


def test_foreign_argument_in_functional():
    x, t = torch.randn(2, 3, 4), torch.randint(0, 3, (2, 4))
    with pytest.raises(TypeError, match=r"'softmax'.*activation='softmax'.*fastdice\.compat\.monai"):
        fastdice.dice_loss(x, t, softmax=True)
    with pytest.raises(TypeError, match="smoth"):  # a plain typo stays Python's own message
        fastdice.dice_loss(x, t, smoth=1.0)


# ----------------------------------------------------------------------------
# Item 3: repr shows exactly the non-default constructor arguments, by their names
# ----------------------------------------------------------------------------

# Non-default values per argument; the first one that is valid for the class is used.
NON_DEFAULT = {
    "activation": ["softmax", "sigmoid"],
    "pooling": ["batch", "sample"],
    "include_background": [False],
    "weight": [[1.0, 2.0, 0.5]],
    "ignore_index": [255],
    "smooth_nr": [0.25, 1.0],
    "smooth_dr": [0.5, 1.0],
    "squared": [True],
    "jaccard": [True],
    "log_loss": [True],
    "soft_label": [True],
    "reduction": ["sum"],
    "log_eps": [1e-5],
    "distributed": [True],
    "lambda_dice": [0.5],
    "lambda_ce": [2.0],
    "ce_weight": [[0.5, 1.0, 2.0]],
    "label_smoothing": [0.1],
    "focal_gamma": [1.5],
    "return_terms": [True],
    "gamma": [3.0, 0.5],
    "lambda_focal": [0.25],
    "focal_weight": [[2.0, 1.0, 1.0]],
    "alpha": [0.3],
    "beta": [0.7],
    "w_type": ["simple"],
    "regions": [((1, 2, 3), (2, 3), (3,))],
}


def _non_default(cls, name, default, extra=None):
    for value in NON_DEFAULT[name]:
        if value == default:
            continue
        try:
            cls(**dict(extra or {}, **{name: value}))
        except (ValueError, TypeError):
            continue
        return value
    raise AssertionError(f"no valid non-default value for {cls.__name__}.{name}")


def _expected_repr(cls, given):
    order = list(inspect.signature(cls).parameters)
    inner = ", ".join(f"{k}={given[k]!r}" for k in order if k in given)
    return f"{cls.__name__}({inner})"


@pytest.mark.parametrize("cls", NATIVE_CLASSES, ids=_ids(NATIVE_CLASSES))
def test_repr_shows_exactly_the_non_default_arguments(cls):
    assert repr(cls()) == f"{cls.__name__}()"
    params = {n: p.default for n, p in inspect.signature(cls).parameters.items() if n != "process_group"}
    for name, default in params.items():
        extra = {"pooling": "batch"} if name == "distributed" else {}
        value = _non_default(cls, name, default, extra)
        given = dict(extra, **{name: value})
        assert repr(cls(**given)) == _expected_repr(cls, given)
    # several at once, in the signature's order whatever the call's order
    given = {}
    for name in reversed(list(params)):
        if name in ("distributed", "ignore_index", "weight", "ce_weight", "focal_weight"):
            continue
        candidate = dict(given, **{name: _non_default(cls, name, params[name])})
        try:
            cls(**candidate)
        except (ValueError, TypeError):
            continue
        given = candidate
    assert len(given) >= 4
    module = cls(**given)
    assert repr(module) == _expected_repr(cls, given)
    # the repr is itself a valid constructor call
    assert repr(eval(repr(module), {cls.__name__: cls})) == repr(module)


def test_repr_examples_from_the_issue():
    assert (repr(fastdice.TverskyLoss(activation="softmax", alpha=0.3, beta=0.7, pooling="batch"))
            == "TverskyLoss(alpha=0.3, beta=0.7, activation='softmax', pooling='batch')")
    assert repr(fastdice.GeneralizedDiceLoss(w_type="simple")) == "GeneralizedDiceLoss(w_type='simple')"
    assert repr(fastdice.DiceFocalLoss()) == "DiceFocalLoss()"
    assert repr(fastdice.DiceFocalLoss(gamma=1.0, focal_weight=[1.0, 2.0])) == (
        "DiceFocalLoss(gamma=1.0, focal_weight=[1.0, 2.0])"
    )


def test_repr_follows_a_loaded_weight():
    loss = fastdice.DiceLoss(weight=[1.0, 1.0, 1.0])
    loss.load_state_dict({"weight": torch.tensor([1.0, 2.0, 3.0])})
    assert repr(loss) == "DiceLoss(weight=[1.0, 2.0, 3.0])"


# ----------------------------------------------------------------------------
# Item 2: inputs without elements
# ----------------------------------------------------------------------------

EMPTY_SHAPES = [pytest.param((0, 3, 4, 5), id="B0"), pytest.param((2, 3, 0, 5), id="H0"),
                pytest.param((2, 3, 4, 0), id="W0")]

NATIVE_EMPTY = [
    pytest.param(fastdice.DiceLoss, dict(activation="softmax", pooling=p, reduction=r), id=f"DiceLoss-{p}-{r}")
    for p in ("global", "batch", "sample") for r in ("mean", "sum", "none")
] + [
    pytest.param(fastdice.DiceLoss, dict(activation="softmax", pooling=p, smooth_nr=0.0, smooth_dr=0.0),
                 id=f"DiceLoss-{p}-unsmoothed") for p in ("global", "batch", "sample")
] + [
    pytest.param(fastdice.DiceCELoss, dict(pooling=p), id=f"DiceCELoss-{p}") for p in ("global", "batch", "sample")
] + [
    pytest.param(fastdice.DiceFocalLoss, dict(pooling="sample"), id="DiceFocalLoss-sample"),
    pytest.param(fastdice.TverskyLoss, dict(activation="softmax", pooling="sample"), id="TverskyLoss-sample"),
    pytest.param(fastdice.TverskyLoss, dict(activation="softmax", pooling="batch"), id="TverskyLoss-batch"),
    pytest.param(fastdice.GeneralizedDiceLoss, dict(activation="softmax"), id="GeneralizedDiceLoss-sample"),
    pytest.param(fastdice.GeneralizedDiceLoss, dict(activation="softmax", pooling="batch"), id="GeneralizedDiceLoss-batch"),
]


def _expected_empty_shape(kwargs, shape):
    if kwargs.get("reduction") != "none":
        return ()
    return {"global": (), "batch": (shape[1],), "sample": (shape[0], shape[1])}[kwargs["pooling"]]


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("cls, kwargs", NATIVE_EMPTY)
@pytest.mark.parametrize("target_kind", ["labels", "dense"])
def test_native_empty_input_is_a_differentiable_zero(cls, kwargs, shape, target_kind):
    x = torch.randn(shape, requires_grad=True)
    if target_kind == "labels":
        t = torch.randint(0, shape[1], (shape[0], *shape[2:]))
    else:
        t = torch.rand(shape)
    loss = cls(**kwargs)(x, t)
    assert loss.shape == _expected_empty_shape(kwargs, shape)
    assert (loss == 0).all(), loss  # NaN fails here
    (loss.sum() * 1.7).backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("pooling", ["global", "batch", "sample"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_native_no_classes_is_a_differentiable_zero(pooling, reduction):
    x = torch.randn(2, 0, 4, 5, requires_grad=True)
    loss = fastdice.DiceLoss(activation="sigmoid", pooling=pooling, reduction=reduction)(x, torch.rand(2, 0, 4, 5))
    assert (loss == 0).all() and loss.shape == _expected_empty_shape(dict(pooling=pooling, reduction=reduction), x.shape)
    (loss.sum() * 0.3).backward()
    assert x.grad.shape == x.shape


def _run(fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn()
        return "value", out
    except Exception as e:  # noqa: BLE001
        return "error", type(e)


def _same_outcome(ours, theirs):
    kind_o, o = ours
    kind_t, t = theirs
    assert kind_o == kind_t, (ours, theirs)
    if kind_o == "error":
        assert issubclass(o, t), (o, t)
        return
    assert o.shape == t.shape, (o.shape, t.shape)
    assert torch.equal(torch.isnan(o), torch.isnan(t)), (o, t)
    finite = ~torch.isnan(t)
    assert torch.allclose(o[finite].double(), t[finite].double(), rtol=1e-5, atol=1e-6), (o, t)


MONAI_EMPTY = [
    pytest.param(name, kwargs, id=f"{name}-{'-'.join(f'{k}' for k in kwargs) or 'default'}")
    for name, kwargs in [
        ("DiceLoss", dict(softmax=True, to_onehot_y=True)),
        ("DiceLoss", dict(softmax=True, to_onehot_y=True, batch=True)),
        ("GeneralizedDiceLoss", dict(softmax=True, to_onehot_y=True)),
        ("TverskyLoss", dict(softmax=True, to_onehot_y=True)),
        ("DiceCELoss", dict(softmax=True, to_onehot_y=True)),
        ("DiceCELoss", dict(softmax=True, to_onehot_y=True, batch=True)),
        ("DiceFocalLoss", dict(softmax=True, to_onehot_y=True)),
        ("DiceFocalLoss", dict(sigmoid=True)),
        ("GeneralizedDiceFocalLoss", dict(softmax=True, to_onehot_y=True)),
    ]
]


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("name, kwargs", MONAI_EMPTY)
def test_compat_monai_empty_input_as_monai(name, kwargs, shape):
    monai_losses = pytest.importorskip("monai.losses")
    x = torch.randn(shape)
    if kwargs.get("to_onehot_y"):
        t = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]))
    else:
        t = (torch.rand(shape) > 0.5).float()
    ours = _run(lambda: getattr(fmonai, name)(**kwargs)(x, t))
    theirs = _run(lambda: getattr(monai_losses, name)(**kwargs)(x, t))
    assert not (ours[0] == "error" and issubclass(ours[1], IndexError)), ours
    _same_outcome(ours, theirs)


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("name", ["DiceLoss", "JaccardLoss", "TverskyLoss"])
@pytest.mark.parametrize("mode", ["multiclass", "binary", "multilabel"])
def test_compat_smp_empty_input_as_smp(name, mode, shape):
    smp_losses = pytest.importorskip("segmentation_models_pytorch.losses")
    c = 1 if mode == "binary" else shape[1]
    shape = (shape[0], c, *shape[2:])
    x = torch.randn(shape)
    t = torch.randint(0, c, (shape[0], *shape[2:])) if mode == "multiclass" else (torch.rand(shape) > 0.5).float()
    ours = _run(lambda: getattr(fsmp, name)(mode)(x, t))
    theirs = _run(lambda: getattr(smp_losses, name)(mode)(x, t))
    _same_outcome(ours, theirs)


# ----------------------------------------------------------------------------
# Item 11: warnings point at the caller's line
# ----------------------------------------------------------------------------

WARNING_CASES = [
    pytest.param(lambda: fastdice.DiceLoss(activation="softmax"), "single channel", id="DiceLoss-softmax"),
    pytest.param(lambda: fastdice.DiceLoss(include_background=False), "include_background", id="DiceLoss-background"),
    pytest.param(lambda: fastdice.DiceCELoss(), "single channel", id="DiceCELoss-softmax"),
    pytest.param(lambda: fastdice.DiceCELoss(activation="sigmoid", include_background=False), "include_background",
                 id="DiceCELoss-background"),
    pytest.param(lambda: fastdice.DiceFocalLoss(activation="sigmoid", include_background=False), "include_background",
                 id="DiceFocalLoss-background"),
    pytest.param(lambda: fastdice.TverskyLoss(include_background=False), "include_background", id="TverskyLoss-background"),
    pytest.param(lambda: fastdice.GeneralizedDiceLoss(include_background=False), "include_background",
                 id="GeneralizedDiceLoss-background"),
    pytest.param(lambda: fmonai.DiceLoss(softmax=True), "softmax=True", id="monai-DiceLoss-softmax"),
    pytest.param(lambda: fmonai.DiceCELoss(include_background=False, sigmoid=True), "include_background",
                 id="monai-DiceCELoss-background"),
    pytest.param(lambda: fmonai.DiceFocalLoss(include_background=False), "include_background",
                 id="monai-DiceFocalLoss-background"),
]


@pytest.mark.parametrize("make, match", WARNING_CASES)
def test_warnings_point_at_the_caller(make, match):
    loss_fn = make()
    x = torch.rand(2, 1, 6, 6)  # probabilities: valid input for every activation
    t = (torch.rand(2, 1, 6, 6) > 0.5).float()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        loss_fn(x, t)
    relevant = [w for w in caught if match in str(w.message)]
    assert relevant, [str(w.message) for w in caught]
    for w in relevant:
        assert (os.path.abspath(w.filename), w.lineno) == (os.path.abspath(__file__), line), (w.filename, w.lineno)


def test_functional_warning_points_at_the_caller():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        fastdice.dice_loss(torch.randn(2, 1, 8), torch.rand(2, 1, 8), activation="softmax")
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]


# ----------------------------------------------------------------------------
# Items 8, 9, 12: error messages that say what to do
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("label_shape", ["B-spatial", "B-1-spatial"])
@pytest.mark.parametrize("cls", NATIVE_CLASSES, ids=_ids(NATIVE_CLASSES))
def test_float_label_map_names_long(cls, label_shape):
    x = torch.randn(2, 3, 5, 6)
    labels = torch.randint(0, 3, (2, 5, 6)).float()  # what MONAI's LoadImage yields
    if label_shape == "B-1-spatial":
        labels = labels.unsqueeze(1)
    kwargs = {} if cls in (fastdice.DiceCELoss, fastdice.DiceFocalLoss) else {"activation": "softmax"}
    with pytest.raises(ValueError, match=r"label map.*float32.*target\.long\(\)"):
        cls(**kwargs)(x, labels)
    cls(**kwargs)(x, labels.long())  # the fix the message names works


def test_one_channel_input_with_class_labels_explains():
    x = torch.randn(2, 1, 5, 6)
    labels = torch.randint(0, 3, (2, 5, 6))
    labels[1, 2, 3] = 2
    for target in (labels, labels.unsqueeze(1)):
        with pytest.raises(ValueError) as info:
            fastdice.DiceLoss(activation="sigmoid")(x, target)
        text = str(info.value)
        assert "single channel" in text and "output channels" in text and "sigmoid" in text, text
        assert "pass an integer label map" not in text


@pytest.mark.parametrize("label_shape", ["B-spatial", "B-1-spatial"])
def test_out_of_range_label_reports_sample_and_coordinates(label_shape):
    x = torch.randn(3, 4, 7, 5, 6)
    labels = torch.randint(0, 4, (3, 7, 5, 6))
    labels[2, 6, 1, 4] = 9
    labels[2, 6, 3, 5] = 7  # later in memory: the first offender is reported
    index = "2, 6, 1, 4" if label_shape == "B-spatial" else "2, 0, 6, 1, 4"
    target = labels if label_shape == "B-spatial" else labels.unsqueeze(1)
    with pytest.raises(ValueError, match=rf"label 9 at target\[{index}\] \(sample 2, spatial position \(6, 1, 4\)"):
        fastdice.DiceLoss(activation="softmax")(x, target)
    with pytest.raises(ValueError, match=r"target label 9 at target\[2, 6, 1, 4\]"):
        fsmp.DiceLoss("multiclass")(x, labels)


def test_metric_out_of_range_label_reports_coordinates():
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[1, 3, 2] = 5
    with pytest.raises(ValueError, match=r"target label 5 at target\[1, 3, 2\] \(sample 1, spatial position \(3, 2\)"):
        fastdice.metrics.DiceScore().update(torch.randn(2, 3, 4, 5), labels)
    with pytest.raises(ValueError, match=r"target label 5 at target\[1, 3, 2\]"):
        fastdice.metrics.dice_score(torch.randn(2, 3, 4, 5), labels)


def test_dense_target_error_reports_coordinates():
    t = torch.rand(2, 3, 4, 5)
    t[1, 2, 3, 1] = 255.0
    with pytest.raises(ValueError, match=r"got 255 at target\[1, 2, 3, 1\] \(sample 1, class 2, spatial position \(3, 1\)"):
        fastdice.DiceLoss(activation="sigmoid")(torch.randn(2, 3, 4, 5), t)


# ----------------------------------------------------------------------------
# Item 13: the Dice and the CE term for logging
# ----------------------------------------------------------------------------

TERM_CASES = [
    pytest.param(dict(pooling="sample", include_background=False, lambda_dice=0.7, lambda_ce=1.3), "labels",
                 id="softmax-sample-labels"),
    pytest.param(dict(pooling="batch", ce_weight=[0.5, 1.0, 2.0], label_smoothing=0.1, ignore_index=255),
                 "labels-ignore", id="softmax-batch-ceweight-smoothing-ignore"),
    pytest.param(dict(activation="sigmoid", pooling="global"), "dense", id="sigmoid-global-dense"),
    pytest.param(dict(pooling="sample", reduction="sum"), "dense", id="softmax-sample-dense-sum"),
]


def _terms_inputs(kind, g):
    x = (3 * torch.randn(3, 3, 6, 7, generator=g, dtype=torch.float64)).requires_grad_(True)
    if kind == "dense":
        t = torch.rand(3, 3, 6, 7, generator=g, dtype=torch.float64)
    else:
        t = torch.randint(0, 3, (3, 6, 7), generator=g)
        if kind == "labels-ignore":
            t[torch.rand(t.shape, generator=g) < 0.2] = 255
    return x, t


def _ce_oracle(x, t, opts):
    if opts.get("activation", "softmax") == "sigmoid":
        return torch.nn.functional.binary_cross_entropy_with_logits(x, t)
    ce_weight = torch.tensor(opts["ce_weight"], dtype=x.dtype) if "ce_weight" in opts else None
    reduction = opts.get("reduction", "mean")
    return torch.nn.functional.cross_entropy(
        x, t, weight=ce_weight, ignore_index=opts.get("ignore_index", -100),
        label_smoothing=opts.get("label_smoothing", 0.0), reduction=reduction,
    )


@pytest.mark.parametrize("opts, kind", TERM_CASES)
@pytest.mark.parametrize("cls", [fastdice.DiceCELoss, fastdice.DiceFocalLoss])
def test_return_terms(cls, opts, kind):
    g = torch.Generator().manual_seed(13)
    if cls is fastdice.DiceFocalLoss:
        opts = {{"lambda_ce": "lambda_focal", "ce_weight": "focal_weight"}.get(k, k): v for k, v in opts.items()
                if k != "label_smoothing"}
    x, t = _terms_inputs(kind, g)
    plain = cls(**opts)
    terms = cls(return_terms=True, **opts)
    out = terms(x, t)
    assert isinstance(out, tuple) and len(out) == 3 and out.loss.requires_grad
    loss, dice, second = out
    lambda_dice = opts.get("lambda_dice", 1.0)
    lambda_second = opts.get("lambda_ce", opts.get("lambda_focal", 1.0))
    assert_close(loss, lambda_dice * dice + lambda_second * second, torch.float64, "loss = weighted terms")
    # the Dice term is the Dice loss of the same options, against the eager reference
    dice_opts = {k: v for k, v in opts.items() if k in DiceOptions.__dataclass_fields__}
    dice_opts.setdefault("activation", "softmax")
    expected_dice = reference.dice_loss(x, t, **dice_opts)
    assert_close(dice, expected_dice, torch.float64, "dice term")
    if cls is fastdice.DiceCELoss:
        assert_close(second, _ce_oracle(x, t, opts), torch.float64, "ce term")
    # the loss is the plain module's, values and gradients (grad_output != 1)
    grad_out = torch.tensor(0.37, dtype=torch.float64)
    (loss * grad_out).backward()
    g_terms, x.grad = x.grad, None
    (plain(x, t) * grad_out).backward()
    assert_close(loss, plain(x, t), torch.float64, "loss")
    assert_close(g_terms, x.grad, torch.float64, "grad of loss")
    # the terms are differentiable on their own: the Dice term's gradient is the reference's
    x.grad = None
    (cls(return_terms=True, **opts)(x, t).dice * grad_out).backward()
    g_dice, x.grad = x.grad, None
    (expected_dice * grad_out).backward()
    assert_close(g_dice, x.grad, torch.float64, "grad of the dice term")


def test_reduction_none_names_return_terms():
    with pytest.raises(ValueError, match="return_terms=True"):
        fastdice.DiceCELoss(reduction="none")


# ----------------------------------------------------------------------------
# Item 10: a source checkout that is not built says what to do
# ----------------------------------------------------------------------------


@needs_source_checkout
def test_unbuilt_source_checkout_says_what_to_do(tmp_path):
    root = pathlib.Path(fastdice.__file__).parent.parent
    checkout = tmp_path / "checkout"
    shutil.copytree(root / "fastdice", checkout / "fastdice",
                    ignore=shutil.ignore_patterns("_C*.so", "__pycache__", "_build_config.py"))
    shutil.copy(root / "setup.py", checkout / "setup.py")
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", "import fastdice"], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    err = proc.stderr
    assert "build_ext --inplace" in err and "circular import" not in err.splitlines()[-1], err[-2000:]
    assert "another working directory" in err


# ----------------------------------------------------------------------------
# TorchScript, repr at the given precision, equality
# ----------------------------------------------------------------------------

NATIVE_MODULES = [
    pytest.param(lambda: fastdice.DiceLoss(activation="softmax", weight=[1.0, 2.0]), id="DiceLoss"),
    pytest.param(lambda: fastdice.DiceCELoss(), id="DiceCELoss"),
    pytest.param(lambda: fastdice.DiceFocalLoss(gamma=1.5), id="DiceFocalLoss"),
    pytest.param(lambda: fastdice.TverskyLoss(alpha=0.3, beta=0.7), id="TverskyLoss"),
    pytest.param(lambda: fastdice.GeneralizedDiceLoss(w_type="simple"), id="GeneralizedDiceLoss"),
]


@pytest.mark.parametrize("make", NATIVE_MODULES)
def test_torch_jit_script_says_to_use_compile_or_export(make):
    """One clear error, for the loss and for a model that holds it."""
    for scripted in (make(), torch.nn.Sequential(torch.nn.Identity(), make())):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's own deprecation
            with pytest.raises(RuntimeError, match=r"not scriptable.*torch\.compile.*torch\.export"):
                torch.jit.script(scripted)


@pytest.mark.parametrize(
    "dtype, shown",
    [(torch.float32, "[0.1, 1.0, 2.3]"), (torch.float16, "[0.1, 1.0, 2.3]"), (torch.bfloat16, "[0.1, 1.0, 2.3]"),
     (torch.float64, "[0.1, 1.0, 2.3]")],
)
def test_repr_shows_a_weight_as_given(dtype, shown):
    """A tensor weight shows the numbers the user wrote, not their float64 values."""
    weight = torch.tensor([0.1, 1.0, 2.3], dtype=dtype)
    assert float(weight[0].double()) != 0.1 or dtype == torch.float64  # the noise the repr must not show
    for loss in (fastdice.DiceLoss(weight=weight), fastdice.DiceCELoss(ce_weight=weight)):
        assert shown in repr(loss)
        assert eval(repr(loss), {type(loss).__name__: type(loss)}) == loss


@pytest.mark.parametrize("make", NATIVE_MODULES)
def test_modules_with_equal_options_compare_equal(make):
    a, b = make(), make()
    assert a == b and not (a != b)
    assert eval(repr(a), {type(a).__name__: type(a)}) == a
    assert len({a, b}) == 2  # hashed by identity: both stay in sets (named_modules, optimizers)
    other = copy.deepcopy(a)
    other.opts = other.opts.replace(smooth_nr=0.5)
    assert other != a
    assert fastdice.DiceCELoss() != fastdice.DiceFocalLoss(gamma=0.0)  # another class is never equal


def test_equality_follows_the_weight_values():
    a = fastdice.DiceLoss(weight=[1.0, 2.0, 3.0])
    b = fastdice.DiceLoss(weight=[1.0, 2.0, 3.0])
    assert a == b
    b.load_state_dict({"weight": torch.tensor([1.0, 2.0, 3.5])})
    assert a != b and repr(b) == "DiceLoss(weight=[1.0, 2.0, 3.5])"
    assert fastdice.DiceLoss(weight=[1.0, 2.0]) != fastdice.DiceLoss(weight=[1.0, 2.0 + 1e-12])
