"""The demo end to end at a tiny size: it trains, and it writes its figure and summary."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("demo", ROOT / "examples" / "demo.py")
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)

EPOCHS = 5
TINY = [
    "--size", "32", "--train-images", "64", "--val-images", "16", "--batch-size", "8",
    "--epochs", str(EPOCHS), "--lr", "1e-2", "--seed", "0", "--device", "cpu", "--no-progress",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_out")
    summary = demo.main(TINY + ["--out", str(out)])
    return out, summary


def test_writes_figure_and_summary(tiny_run):
    out, summary = tiny_run
    png = out / "demo.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "demo.json").read_text())
    assert on_disk["runs"].keys() == {"ce", "dice", "dice+ce"}
    assert on_disk["config"]["epochs"] == EPOCHS and on_disk["device"] == "cpu"
    assert on_disk["torch_version"] and on_disk["wall_s"] > 0
    for run in on_disk["runs"].values():
        assert [h["epoch"] for h in run["history"]] == list(range(EPOCHS + 1))
        assert set(run["final_dice"]) == {"spot", "streak"}
        assert all(0.0 <= v <= 1.0 for v in run["final_dice"].values())
    assert on_disk["runs"] == json.loads(json.dumps(summary["runs"]))


def test_same_initialization_for_every_loss(tiny_run):
    _, summary = tiny_run
    untrained = {name: run["history"][0]["dice"] for name, run in summary["runs"].items()}
    assert untrained["ce"] == untrained["dice"] == untrained["dice+ce"]


def test_dice_run_learns_the_lesions(tiny_run):
    _, summary = tiny_run
    run = summary["runs"]["dice"]
    assert run["untrained_mean_fg_dice"] == run["history"][0]["mean_fg_dice"]
    assert run["final_mean_fg_dice"] >= run["untrained_mean_fg_dice"] + 0.15, run["history"]


def test_loss_timing_compares_fused_and_reference_on_the_same_batches(tiny_run):
    _, summary = tiny_run
    timing = summary["loss_timing"]
    assert timing["batches"] == EPOCHS * 64 // 8
    assert timing["fastdice_total_s"] > 0 and timing["reference_total_s"] > 0
    assert timing["speedup_reference_over_fastdice"] == pytest.approx(
        timing["reference_total_s"] / timing["fastdice_total_s"]
    )
    # same logits, same options: the fused loss and the reference agree
    assert timing["max_abs_loss_diff"] < 1e-5
    assert timing["max_abs_grad_diff"] < 1e-6


def test_prints_the_table_last(tmp_path, capsys):
    demo.main(["--size", "16", "--train-images", "8", "--val-images", "4", "--batch-size", "4",
               "--epochs", "1", "--show", "2", "--no-progress", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("loss fwd+bwd time: fastdice ") and lines[-1].endswith(" x)")
    names = [line.split()[0] for line in lines[-4:-1]]
    assert names == ["ce", "dice", "dice+ce"]


def test_rejects_bad_sizes():
    with pytest.raises(SystemExit):
        demo.parse_args(["--size", "30"])


def test_validation_dice_is_the_plain_count_over_argmax(tiny_run):
    # The demo's validation Dice (fastdice.metrics, from the logits) is exactly the
    # plain-torch count over argmax predictions it replaced, bit for bit.
    _, summary = tiny_run
    assert summary["validation_metric"].startswith("fastdice.metrics.DiceScore(")
    g = torch.Generator().manual_seed(3)
    images, labels = demo.make_dataset(12, 16, g)
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = demo.UNet(width=4)
        model.eval()  # BatchNorm with its initial running statistics: a deterministic model
        fused = demo.validation_dice(model, images, labels, batch_size=5)
        plain = demo.hard_dice(demo.predict(model, images, batch_size=5), labels)
        assert fused == plain
    # with a class absent from both prediction and target: 1
    labels = torch.zeros_like(labels)
    model.head.bias.data = torch.tensor([50.0, 0.0, 0.0])  # predicts background everywhere
    assert demo.validation_dice(model, images, labels, batch_size=5) == {1: 1.0, 2: 1.0}


def test_without_matplotlib_writes_json_and_table(tmp_path, monkeypatch, capsys):
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    argv = [
        "--size", "16", "--train-images", "8", "--val-images", "4", "--batch-size", "4", "--epochs", "1",
        "--seed", "0", "--device", "cpu", "--no-progress", "--out", str(tmp_path),
    ]
    summary = demo.main(argv)
    out = capsys.readouterr().out
    assert not (tmp_path / "demo.png").exists()
    on_disk = json.loads((tmp_path / "demo.json").read_text())
    assert on_disk["figure"] is None and "matplotlib" in on_disk["figure_skipped"]
    assert on_disk["runs"].keys() == {"ce", "dice", "dice+ce"} == summary["runs"].keys()
    # said before any work started, and the table is printed
    assert out.index("no figure") < out.index("train /")
    assert "mean fg Dice" in out and all(name in out for name in ("ce", "dice", "dice+ce"))


def test_optional_dependencies_are_declared_as_extras():
    import pathlib

    try:
        import tomllib
    except ImportError:  # Python < 3.11
        pytest.skip("tomllib needs Python 3.11")
    meta = tomllib.loads((pathlib.Path(demo.__file__).parent.parent / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    assert {"demo", "test", "bench"} <= set(extras)
    assert any(d.startswith("matplotlib") for d in extras["demo"])
    assert any(d.startswith("monai") for d in extras["test"]) and any(d.startswith("exacta") for d in extras["bench"])
    assert meta["license"] == "BSD-3-Clause" and "LICENSE" in meta["license-files"]  # SPDX (PEP 639)


def test_python_m_fastdice_demo_runs_the_example():
    """``python -m fastdice.demo --help`` (the library's shim) runs examples/demo.py."""
    proc = subprocess.run([sys.executable, "-m", "fastdice.demo", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "examples/demo.py" in proc.stdout and "--epochs" in proc.stdout
