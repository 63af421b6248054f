import pytest
import torch

from fantasytalking_core.devices import pick_device
from fantasytalking_core.encoders import pad_context


def test_pick_device_rules():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    assert pick_device("auto") == pick_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        pick_device("tpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
            pick_device("cuda")


def test_pad_context_appends_zero_rows_only():
    t = torch.randn(2, 3, 4)
    out = pad_context(t, 5)
    assert out.shape == (2, 5, 4) and torch.equal(out[:, :3], t) and not out[:, 3:].any()
    row = t[0]
    assert pad_context(row, 3) is row
    with pytest.raises(ValueError, match="cannot pad 3 text tokens down to 2"):
        pad_context(t, 2)
