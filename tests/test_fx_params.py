import math

import pytest
import torch

from fx import ParamSpec


def test_linear_mapping_and_exact_inverse():
    s = ParamSpec("gain_db", "dB", -20.0, 20.0, "linear", 0.0)
    u = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    x = s.to_physical(u)
    assert torch.allclose(x, torch.tensor([-20.0, -10.0, 0.0, 20.0], dtype=torch.float64))
    assert torch.allclose(s.to_unit(x), u, atol=1e-15)
    assert s.neutral_unit == pytest.approx(0.5)


def test_log_mapping_moves_octaves_per_unit_step():
    s = ParamSpec("freq", "Hz", 20.0, 20480.0, "log", 640.0)  # 10 octaves
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    x = s.to_physical(u)
    assert torch.allclose(x[1:] / x[:-1], torch.full((10,), 2.0, dtype=torch.float64))
    assert s.to_physical(0.5).item() == pytest.approx(math.sqrt(20.0 * 20480.0))
    assert torch.allclose(s.to_unit(x), u, atol=1e-14)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="f", unit="Hz", min=0.0, max=10.0, scale="log", neutral=1.0), "log scale needs min > 0"),
        (dict(name="f", unit="", min=1.0, max=1.0, scale="linear", neutral=1.0), "need finite min < max"),
        (dict(name="f", unit="", min=0.0, max=1.0, scale="cubic", neutral=0.0), "scale must be one of"),
        (dict(name="f", unit="", min=0.0, max=1.0, scale="linear", neutral=2.0), "neutral 2.0 outside"),
        (dict(name="not valid", unit="", min=0.0, max=1.0, scale="linear", neutral=0.0), "must be an identifier"),
    ],
)
def test_invalid_spec_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ParamSpec(**kwargs)
