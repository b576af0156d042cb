"""Stand-in for MONAI's own ``tests.test_utils`` (not shipped in the monai wheel).

Only the helpers that MONAI's loss tests import, written for fastdice, built on the
installed monai package where MONAI's helper is (``monai.networks.convert_to_torchscript``).
The conftest registers this module as ``tests.test_utils``.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from monai.networks import convert_to_torchscript


def test_script_save(net, *inputs, device=None, rtol=1e-4, atol=0.0):
    """Script ``net``, save it, load it back and compare outputs (as MONAI's helper: CPU, verify=True)."""
    with tempfile.TemporaryDirectory() as tempdir:
        convert_to_torchscript(
            model=net,
            filename_or_obj=os.path.join(tempdir, "model.ts"),
            verify=True,
            inputs=inputs,
            device="cpu",
            rtol=rtol,
            atol=atol,
        )


def test_export_save(net, *inputs, device=None, rtol=1e-4, atol=0.0):
    """``torch.export`` ``net``, save and load the program, compare its outputs with ``net``'s (CPU, no grad)."""
    net = net.to("cpu").eval()
    inputs = tuple(i.to("cpu") for i in inputs)
    with torch.no_grad():
        expected = net(*inputs)
        program = torch.export.export(net, inputs)
        with tempfile.TemporaryDirectory() as tempdir:
            path = os.path.join(tempdir, "model.pt2")
            torch.export.save(program, path)
            loaded = torch.export.load(path)
        actual = loaded.module()(*inputs)
    np.testing.assert_allclose(actual.cpu().numpy(), expected.cpu().numpy(), rtol=rtol, atol=atol)


# Not tests themselves: keep pytest from collecting the helpers wherever they are imported.
test_script_save.__test__ = False  # type: ignore[attr-defined]
test_export_save.__test__ = False  # type: ignore[attr-defined]
