"""More than 2^31 positions: 64-bit index math, on an expanded (stride-0)
view so that the test needs no memory of that size."""

import pytest
import torch

import fastdice


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_more_than_2_31_positions_forward(device):
    S = 2**31 + 4099  # past int32, with a ragged last tile
    logits = torch.tensor([[0.3, -1.2]], device=device)  # (B=1, C=2)
    x = logits[:, :, None].expand(1, 2, S)
    t = torch.ones(1, 1, dtype=torch.int64, device=device).expand(1, S)
    stats = fastdice.dice_stats(x, t, "softmax", True, None).double().cpu()
    p = torch.softmax(logits.double(), 1)[0].cpu()
    expected = torch.zeros(2, fastdice.NUM_STATS, dtype=torch.float64)
    onehot = torch.tensor([0.0, 1.0], dtype=torch.float64)
    expected[:, 0] = S * p * onehot
    expected[:, 1] = S * p
    expected[:, 2] = S * onehot
    expected[:, 3] = S * p * p
    expected[:, 4] = S * onehot
    expected[:, 5] = S * (p - onehot).abs()
    expected[:, 6] = S * p
    expected[:, 7] = S * onehot
    expected[:, 8] = S
    torch.testing.assert_close(stats[0], expected, rtol=2e-6, atol=0)
