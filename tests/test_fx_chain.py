"""Chain: spec, neutrality, batching, dict round trip, validation, custom effects."""

import json
import math

import pytest
import torch

import fx


def _noise(batch, channels, n, seed=0):
    return 0.3 * torch.randn(batch, channels, n, generator=torch.Generator().manual_seed(seed))


def test_spec_and_param_layout():
    c = fx.Chain.from_spec("eq, reverb,eq", seed=5)
    assert c.spec == "eq,reverb,eq" and len(c) == 3 and isinstance(c[1], fx.NoiseReverb)
    assert c.num_params == 18 + 22 + 18
    idx = [i for i, _ in c.param_specs]
    assert idx == [0] * 18 + [1] * 22 + [2] * 18
    assert c.param_specs[18][1].name == "band0_rt60_s" and c[1].seed == 5 and c.seed == 5
    assert c.neutral_unit().shape == (c.num_params,)
    phys = c.unit_to_physical(c.neutral_unit()[None])
    assert [len(p) for p in phys] == [18, 22, 18]
    assert phys[1]["mix"].item() == 0.0 and phys[0]["band0_gain_db"].item() == 0.0
    assert fx.Chain.from_spec("").num_params == 0
    c.append(fx.Gain())
    assert c.spec == "eq,reverb,eq,gain"


@pytest.mark.parametrize("sr", [8000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_neutral_chain_returns_input(sr, channels):
    c = fx.Chain.from_spec("eq,reverb,compressor,gain,distortion")
    x = _noise(2, channels, sr // 10)
    y = c.process(x, sr, c.neutral_unit()[None].expand(2, -1))
    assert y.shape == x.shape and (y - x).abs().max().item() < 1e-4


def test_broadcast_audio_batch_equals_per_item_processing():
    sr = 16000
    c = fx.Chain.from_spec("eq,reverb")
    x = _noise(1, 2, sr // 4)
    u = torch.rand(3, c.num_params, generator=torch.Generator().manual_seed(0))
    y = c.process(x, sr, u)
    assert y.shape == (3, 2, sr // 4)
    for i in range(3):
        assert torch.allclose(y[i], c.process(x, sr, u[i : i + 1])[0], atol=1e-5)
    assert torch.equal(c.process(x, sr, torch.full_like(u, 1.5)), c.process(x, sr, torch.ones_like(u)))


def test_chain_gradients_finite_and_nonzero():
    sr = 48000
    c = fx.Chain.from_spec("eq,compressor,distortion,reverb,gain")
    x = _noise(1, 2, sr // 4)
    u = (0.15 + 0.7 * torch.rand(2, c.num_params, generator=torch.Generator().manual_seed(1))).requires_grad_()
    y = c.process(x, sr, u)
    (torch.fft.rfft(y).abs().pow(0.5).mean() + y.square().mean()).backward()
    assert torch.isfinite(u.grad).all() and (u.grad != 0).all()


def test_dict_round_trip_exact():
    c = fx.Chain.from_spec("eq,reverb,compressor", seed=7)
    u = torch.rand(c.num_params, generator=torch.Generator().manual_seed(2))
    d = c.to_dict(u)
    assert d["chain"] == "eq,reverb,compressor" and d["seed"] == 7
    assert [e["type"] for e in d["effects"]] == ["eq", "reverb", "compressor"]
    assert all(isinstance(v, float) for e in d["effects"] for v in e["params"].values())
    d = json.loads(json.dumps(d))
    c2, u2 = fx.Chain.from_dict(d)
    assert c2.spec == c.spec and c2.seed == 7 and u2.shape == (c.num_params,)
    assert c2.to_dict(u2) == d
    assert torch.allclose(u2.float(), u, atol=1e-6)
    assert torch.equal(c.params_from_dict(d), u2)
    # the rebuilt chain sounds the same (same seed -> same reverb noise)
    x = _noise(1, 2, 4000)
    assert torch.allclose(c.process(x, 16000, u[None]), c2.process(x, 16000, u2[None]), atol=1e-5)


def test_params_from_dict_rejects_other_chains_and_bad_values():
    c = fx.Chain.from_spec("eq,reverb")
    d = c.to_dict(c.neutral_unit())
    other = fx.Chain.from_spec("reverb,eq")
    with pytest.raises(ValueError, match="chain"):
        other.params_from_dict(d)
    with pytest.raises(ValueError, match="seed"):
        fx.Chain.from_spec("eq,reverb", seed=1).params_from_dict(d)
    bad = json.loads(json.dumps(d))
    del bad["effects"][0]["params"]["band0_gain_db"]
    with pytest.raises(ValueError, match="missing"):
        c.params_from_dict(bad)
    bad = json.loads(json.dumps(d))
    bad["effects"][1]["params"]["mix"] = 150.0
    with pytest.raises(ValueError, match="mix"):
        c.params_from_dict(bad)
    bad = json.loads(json.dumps(d))
    bad["effects"][1]["params"]["mix"] = float("nan")
    with pytest.raises(ValueError, match="mix"):
        c.params_from_dict(bad)
    with pytest.raises(ValueError):
        fx.Chain.from_dict({"chain": "eq,chorus", "seed": 0, "effects": []})


def test_process_rejects_bad_input():
    c = fx.Chain.from_spec("eq,reverb")
    u = c.neutral_unit()[None]
    x = _noise(1, 2, 1000)
    with pytest.raises(ValueError, match="shape"):
        c.process(x[0], 16000, u)
    with pytest.raises(ValueError, match="shape"):
        c.process(x, 16000, u[:, :5])
    with pytest.raises(ValueError, match="batch"):
        c.process(_noise(2, 2, 1000), 16000, u.expand(3, -1))
    nan = u.clone()
    nan[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        c.process(x, 16000, nan)
    inf = u.clone()
    inf[0, 20] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        c.process(x, 16000, inf)
    for sr in (7999, 192001):
        with pytest.raises(ValueError, match="sample_rate"):
            c.process(x, sr, u)
    with pytest.raises(ValueError, match="unknown effect 'chorus'"):
        fx.Chain.from_spec("eq,chorus")
    with pytest.raises(ValueError, match="empty"):
        fx.Chain.from_spec("eq,,reverb")


class Tremolo(fx.Effect):
    type_name = "test_tremolo"
    param_specs = (
        fx.ParamSpec("depth", "", 0.0, 1.0, "linear", 0.0, "modulation depth"),
        fx.ParamSpec("rate_hz", "Hz", 0.5, 20.0, "log", 5.0, "modulation rate"),
    )

    def process(self, audio, sample_rate, params):
        fx.check_audio(audio)
        fx.check_sample_rate(sample_rate)
        p = self.batch_params(params, audio.shape[0], audio)
        t = torch.arange(audio.shape[-1], device=audio.device, dtype=audio.dtype) / sample_rate
        lfo = 0.5 * (1 - torch.cos(2 * math.pi * p["rate_hz"][:, None] * t))
        return audio * (1 - p["depth"][:, None] * lfo)[:, None, :]


def test_custom_effect_in_chain():
    fx.register_effect(Tremolo)
    assert "test_tremolo" in fx.available_effects()
    c = fx.Chain.from_spec("eq,test_tremolo,reverb")
    x = _noise(1, 2, 8000)
    assert (c.process(x, 16000, c.neutral_unit()) - x).abs().max() < 1e-4
    u = c.neutral_unit()[None].clone()
    u[0, 18] = 0.8  # depth
    u.requires_grad_()
    y = c.process(x, 16000, u)
    y.square().mean().backward()
    assert u.grad[0, 18] != 0 and u.grad[0, 19] != 0
    d = c.to_dict(u[0])
    assert d["effects"][1] == {"type": "test_tremolo", "params": {"depth": pytest.approx(0.8), "rate_hz": pytest.approx(5.0)}}
    assert fx.Chain.from_dict(d)[0].spec == c.spec

    class Other(fx.Effect):
        type_name = "test_tremolo"
        param_specs = ()

    with pytest.raises(ValueError, match="already registered"):
        fx.register_effect(Other)
    with pytest.raises(ValueError):
        fx.register_effect(int)


def test_parameters_on_their_range_bounds_keep_their_gradient():
    # the neutral reverb mix and compressor make-up gain sit exactly on 0 in unit space; they must still
    # be able to move (ratio and threshold have no effect at a 0 dBFS threshold: zero gradient is right)
    c = fx.Chain.from_spec("compressor,reverb")
    u = c.neutral_unit().clone().requires_grad_(True)
    x = 0.3 * torch.randn(1, 2, 8000, generator=torch.Generator().manual_seed(0))
    c.process(x, 8000, u).square().mean().backward()
    names = [s.name for _, s in c.param_specs]
    for name in ("mix", "makeup_gain_db"):
        assert u.grad[names.index(name)] != 0, name


def test_processing_without_validation_never_waits_for_the_device(monkeypatch):
    c = fx.Chain.from_spec("eq,compressor,distortion,gain,reverb")
    x = 0.1 * torch.randn(2, 2, 8000)
    u = torch.rand(2, c.num_params)
    c.process(x, 8000, u)  # warm caches and lazy imports

    def forbidden(self, *args):
        raise AssertionError("host synchronisation in the hot path")

    for name in ("__bool__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    c.process(x, 8000, u, validate=False)
