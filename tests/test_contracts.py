"""Python and the extension agree on the contracts the C++ side defines: the
statistics' names and order, the region limits, the epilogue's options (names,
order, types, defaults), and the complete messages of refused values."""

import ast
import pathlib

import pytest
import torch

import fastdice
from fastdice import _ops, functional
from fastdice.options import DiceOptions, check_regions

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_statistic_names_and_indices_come_from_the_extension():
    names, max_regions, region_labels = torch.ops.fastdice.constants()
    assert fastdice.STAT_NAMES == tuple(names) and fastdice.NUM_STATS == len(names)
    assert (_ops.MAX_REGIONS, _ops.REGION_LABELS) == (max_regions, region_labels)
    for index_name, stat in [("TP", "true_positive"), ("SUM_P", "sum_prob"), ("SUM_T", "sum_target"),
                             ("SUM_P2", "sum_prob_sq"), ("SUM_T2", "sum_target_sq"),
                             ("SUM_ABS_DIFF", "sum_abs_diff"), ("SUM_ABS_P", "sum_abs_prob"),
                             ("SUM_ABS_T", "sum_abs_target"), ("VALID_COUNT", "valid_count"),
                             ("PIXEL_LOSS", "pixel_loss"), ("PIXEL_LOSS_TARGET", "pixel_loss_target")]:
        assert names[getattr(functional, index_name)] == stat


def test_each_named_statistic_is_what_its_name_says():
    """The kernels fill the statistic the exported name says, against sums written here."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 5, 4), generator=g)
    stats = fastdice.dice_stats(x, labels, "softmax", True, None, "cross_entropy")
    p = torch.softmax(x, 1)
    t = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).double()
    ce = -torch.log_softmax(x, 1)
    written = {
        "true_positive": p * t, "sum_prob": p, "sum_target": t, "sum_prob_sq": p * p, "sum_target_sq": t * t,
        "sum_abs_diff": (p - t).abs(), "sum_abs_prob": p.abs(), "sum_abs_target": t.abs(),
        "valid_count": torch.ones_like(p), "pixel_loss": ce, "pixel_loss_target": t * ce,
    }
    assert set(written) == set(fastdice.STAT_NAMES)
    for name, elements in written.items():
        expected = elements.sum((2, 3))
        torch.testing.assert_close(stats[..., fastdice.STAT_NAMES.index(name)], expected, rtol=1e-10, atol=1e-10)


def test_region_limits_are_the_ops():
    """The Python check of regions and the op accept and refuse the same tables."""
    x = torch.randn(1, _ops.MAX_REGIONS, 4)
    labels = torch.full((1, 4), _ops.REGION_LABELS - 1)
    widest = [[_ops.REGION_LABELS - 1]] * _ops.MAX_REGIONS
    bits = fastdice.options.region_bits(check_regions(widest))
    fastdice.dice_stats(x, labels, "sigmoid", False, None, regions=bits)  # accepted by both
    with pytest.raises(ValueError, match=str(_ops.MAX_REGIONS)):
        check_regions(widest + [[1]])
    with pytest.raises(ValueError, match=str(_ops.MAX_REGIONS)):
        fastdice.dice_stats(torch.randn(1, _ops.MAX_REGIONS + 1, 4), labels, "sigmoid", False, None,
                            regions=bits + [1])
    with pytest.raises(ValueError, match=str(_ops.REGION_LABELS)):
        check_regions([[_ops.REGION_LABELS]])
    with pytest.raises(fastdice.LabelOutOfRangeError, match=rf"outside \[0, {_ops.REGION_LABELS}\)"):
        fastdice.dice_stats(x, labels + 1, "sigmoid", False, None, regions=bits)


def test_epilogue_options_are_the_schemas():
    """Names, order, types and defaults of the epilogue's options are the op's schema's, and the
    op's own defaults give what the defaults passed by name give."""
    schema = torch.ops.fastdice.dice_loss_from_stats.default._schema
    arguments = schema.arguments[3:]
    assert [(a.name, a.default_value) for a in arguments] == [(n, d) for n, d, _ in _ops.EPILOGUE_OPTIONS]
    assert [str(a.type) for a in arguments] == [k.__name__ for _, _, k in _ops.EPILOGUE_OPTIONS]
    assert all(a.default_value is not None for a in arguments)
    assert set(DiceOptions().epilogue_options()) <= set(_ops.EPILOGUE_OPTION_NAMES)
    g = torch.Generator().manual_seed(0)
    stats = torch.rand(2, 3, fastdice.NUM_STATS, generator=g, dtype=torch.float64) * 5
    by_schema = torch.ops.fastdice.dice_loss_from_stats(stats, None, None)
    by_name = functional.dice_loss_from_stats(stats, **{n: d for n, d, _ in _ops.EPILOGUE_OPTIONS})
    assert torch.equal(by_schema, by_name)
    # The native options' defaults are the op's where both have one.
    native = DiceOptions().epilogue_options()
    for name, default, _ in _ops.EPILOGUE_OPTIONS:
        if name in native and name not in ("pooling",):
            assert native[name] == default, name


@pytest.mark.parametrize(
    "case",
    ["label", "label_channel", "mask", "probability", "dense", "counts_label"],
)
def test_refused_values_have_complete_messages(case):
    """The extension writes the whole message: the index into the tensor and the spatial
    coordinates (never the kernels' flat position for Python to rebuild)."""
    x = torch.rand(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    if case == "label":
        labels[1, 2, 3] = 7
        call, error = lambda: fastdice.dice_stats(x, labels, "softmax", False, None), fastdice.LabelOutOfRangeError
        expected = r"target label 7 at target\[1, 2, 3\] \(sample 1, spatial position \(2, 3\) of \(4, 5\)\)"
    elif case == "label_channel":
        labels[1, 2, 3] = -2
        call = lambda: fastdice.dice_stats(x, labels[:, None], "softmax", False, None)  # noqa: E731
        error = fastdice.LabelOutOfRangeError
        expected = r"target label -2 at target\[1, 0, 2, 3\] \(sample 1, spatial position \(2, 3\) of \(4, 5\)\)"
    elif case == "mask":
        mask = torch.ones(2, 4, 5)
        mask[0, 3, 1] = 0.5
        call, error = lambda: fastdice.dice_stats(x, labels, "softmax", False, None, mask=mask), ValueError
        expected = r"mask values must be 0 or 1; got 0.5 at sample 0, spatial position \(3, 1\) of \(4, 5\)"
    elif case == "probability":
        x[1, 2, 0, 4] = 1.5
        call, error = lambda: fastdice.dice_stats(x, labels, "none", False, None), ValueError
        expected = r"got 1.5 at input\[1, 2, 0, 4\] \(sample 1, class 2, spatial position \(0, 4\) of \(4, 5\)\)"
    elif case == "dense":
        t = torch.zeros_like(x)
        t[0, 1, 2, 2] = 255
        call, error = lambda: fastdice.dice_stats(x, t, "none", False, None), ValueError
        expected = r"got 255 at target\[0, 1, 2, 2\] \(sample 0, class 1, spatial position \(2, 2\) of \(4, 5\)\)"
    else:
        labels[0, 1, 1] = 9
        call = lambda: fastdice.metrics.DiceScore(num_classes=3)(x, labels)  # noqa: E731
        error = fastdice.LabelOutOfRangeError
        expected = r"target label 9 at target\[0, 1, 1\] \(sample 0, spatial position \(1, 1\) of \(4, 5\)\)"
    with pytest.raises(error, match=expected) as caught:
        call()
    assert "flat position" not in str(caught.value)


def test_no_python_parses_the_extensions_messages():
    """No module that calls the ops matches a message of the extension with a regular expression."""
    callers = [ROOT / "fastdice" / name for name in ("_ops.py", "functional.py", "metrics.py")]
    for path in callers + sorted((ROOT / "fastdice" / "compat").rglob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert "re" not in imported, f"{path.relative_to(ROOT)} imports re"


def test_label_out_of_range_is_one_class():
    """The compat modules' LabelOutOfRangeError is fastdice's, raised by type."""
    from fastdice.compat import nnunet, smp

    assert smp.LabelOutOfRangeError is nnunet.LabelOutOfRangeError is fastdice.LabelOutOfRangeError
    assert issubclass(fastdice.LabelOutOfRangeError, ValueError)
    assert issubclass(fastdice.LabelOutOfRangeError, RuntimeError)
    assert issubclass(fastdice.LabelOutOfRangeError, IndexError)


def test_label_out_of_range_under_torch_compile():
    """In a compiled graph the extension's IndexError arrives as it is, its message complete."""
    loss = torch.compile(fastdice.DiceLoss(activation="softmax"), fullgraph=True, backend="eager")
    x, t = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    loss(x, t)
    t[1, 2, 3] = 5
    with pytest.raises(IndexError, match=r"target label 5 at target\[1, 2, 3\] \(sample 1, spatial position \(2, 3\)"):
        loss(x, t)
