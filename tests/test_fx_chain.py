"""Chain: spec, neutrality, batching, stored settings, dict round trip, validation, custom effects."""

import json
import math

import numpy as np
import pytest
import torch

import fx
import fx.effect


@pytest.fixture
def registry():
    """Effects registered by a test are unregistered after it (other tests compare the registry)."""
    saved = dict(fx.effect._REGISTRY)
    yield
    fx.effect._REGISTRY.clear()
    fx.effect._REGISTRY.update(saved)


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


# each rate and each channel count once (every effect's neutrality is checked over the whole rate x channel
# matrix in test_fx_effects); the reverb here has its default 8 s IR
@pytest.mark.parametrize("sr, channels", [(8000, 6), (44100, 1), (48000, 2)])
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
    # a 0.5 s IR (the clip is 0.25 s): the gradients do not depend on its length, its noise table is 16x cheaper
    effects = [fx.create_effect(n) for n in ("eq", "compressor", "distortion")]
    c = fx.Chain(effects + [fx.NoiseReverb(ir_length_s=0.5), fx.Gain()])
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
    c2 = fx.Chain.from_dict(d)
    u2 = c2.settings
    assert c2.spec == c.spec and c2.seed == 7 and u2.shape == (c.num_params,)
    assert c2.to_dict() == d and c2.to_dict(u2) == d
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
    with pytest.raises(ValueError, match="unknown effect 'chorus'"):
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

    def _process(self, audio, sample_rate, p):
        t = torch.arange(audio.shape[-1], device=audio.device, dtype=audio.dtype) / sample_rate
        lfo = 0.5 * (1 - torch.cos(2 * math.pi * p["rate_hz"][:, None] * t))
        return audio * (1 - p["depth"][:, None] * lfo)[:, None, :]


def test_custom_effect_in_chain(registry):
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
    assert fx.Chain.from_dict(d).spec == c.spec

    class Other(fx.Effect):
        type_name = "test_tremolo"
        param_specs = ()

    with pytest.raises(ValueError, match="already registered"):
        fx.register_effect(Other)
    with pytest.raises(ValueError, match="expects an Effect subclass"):
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


# ---------------------------------------------------------------------------------------
# Stored settings
# ---------------------------------------------------------------------------------------


def _eq_reverb_dict(low_shelf_gain_db=-3.5, mix=25.0):
    """A hand-written dict for "eq,reverb": neutral values (12 significant digits, as the format writes
    them) except a low-shelf cut and a reverb mix."""
    c = fx.Chain.from_spec("eq,reverb")
    effects = [{"type": e.type_name, "params": {s.name: float(f"{s.neutral:.12g}") for s in e.param_specs}} for e in c]
    effects[0]["params"]["low_shelf_gain_db"] = low_shelf_gain_db
    effects[1]["params"]["mix"] = mix
    return {"chain": "eq,reverb", "seed": 0, "effects": effects}


def test_from_dict_returns_a_chain_holding_the_dict_settings():
    c = fx.Chain.from_dict(_eq_reverb_dict(low_shelf_gain_db=-3.5, mix=25.0))
    assert isinstance(c, fx.Chain)
    assert c.settings.dtype == torch.float64 and c.settings.shape == (40,)
    # gain: linear over [-20, 20] dB; mix: linear over [0, 100] % (the last reverb parameter)
    np.testing.assert_allclose(c.settings[[0, 39]].numpy(), [16.5 / 40, 0.25], rtol=1e-12)


def test_from_dict_then_to_dict_gives_the_dict_back():
    d = _eq_reverb_dict(low_shelf_gain_db=-3.5, mix=25.0)
    assert fx.Chain.from_dict(d).to_dict() == d


def test_physical_settings_are_the_dict_values_per_effect():
    d = _eq_reverb_dict(low_shelf_gain_db=-3.5, mix=25.0)
    phys = fx.Chain.from_dict(d).physical_settings()
    assert phys == [d["effects"][0]["params"], d["effects"][1]["params"]]
    np.testing.assert_allclose([phys[0]["low_shelf_gain_db"], phys[1]["mix"]], [-3.5, 25.0])


@pytest.mark.parametrize("batch", [1, 2])
def test_calling_a_chain_processes_with_its_settings(batch):
    c = fx.Chain.from_dict(_eq_reverb_dict(mix=40.0))
    x = _noise(batch, 2, 8000)
    y = c(x, 16000)
    # the settings as a unit vector for 16 kHz (where the EQ's top ranges are limited, so it differs from
    # c.settings, which is mapped with the whole ranges)
    u = c.settings_for(16000)
    np.testing.assert_allclose(y.numpy(), c.process(x, 16000, u[None].expand(batch, -1)).numpy(), atol=1e-7)
    assert (y - x).abs().max() > 1e-2  # the stored 40 % mix is audible: not the neutral chain


def test_set_settings_changes_what_the_chain_does():
    c = fx.Chain.from_spec("gain")
    x = _noise(1, 2, 100)
    c.set_settings(torch.tensor([0.75]))  # +12 dB on [-24, 24]
    np.testing.assert_allclose(c(x, 16000).numpy(), (x * 10 ** (12 / 20)).numpy(), rtol=1e-6)


def test_from_spec_holds_neutral_settings():
    c = fx.Chain.from_spec("eq,reverb")
    np.testing.assert_allclose(c.settings.numpy(), c.neutral_unit(torch.float64).numpy())
    # eq gains sit mid-range (0 dB on [-20, 20]); the reverb mix is 0 %
    np.testing.assert_allclose(c.settings[[0, 3, 15, 39]].numpy(), [0.5, 0.5, 0.5, 0.0])


def test_neutral_eq_reverb_chain_returns_its_input():
    c = fx.Chain.from_spec("eq,reverb")
    x = _noise(1, 2, 16000)
    np.testing.assert_allclose(c(x, 16000).numpy(), x.numpy(), atol=1e-5)


def test_set_settings_rejects_a_wrong_shape():
    c = fx.Chain.from_spec("eq,reverb")
    with pytest.raises(ValueError, match=r"settings must have shape \(40,\)"):
        c.set_settings(torch.zeros(39))


def test_set_settings_rejects_nan():
    c = fx.Chain.from_spec("gain,distortion")
    with pytest.raises(ValueError, match="NaN or Inf"):
        c.set_settings(torch.tensor([0.5, float("nan"), 0.5]))


def test_set_settings_clamps_to_the_unit_range():
    c = fx.Chain.from_spec("gain,distortion")
    c.set_settings([-0.5, 0.25, 1.5])
    np.testing.assert_allclose(c.settings.numpy(), [0.0, 0.25, 1.0])


def test_settings_is_a_copy():
    c = fx.Chain.from_spec("gain")
    c.settings[0] = 1.0
    np.testing.assert_allclose(c.settings.numpy(), [0.5])


def test_append_and_slices_keep_the_settings_of_their_effects():
    c = fx.Chain.from_spec("gain,distortion").set_settings([0.75, 0.2, 0.9])
    c.append(fx.Gain())
    np.testing.assert_allclose(c.settings.numpy(), [0.75, 0.2, 0.9, 0.5])
    np.testing.assert_allclose(c[1:].settings.numpy(), [0.2, 0.9, 0.5])


def test_settings_survive_a_dtype_cast_of_the_module():
    c = fx.Chain.from_dict(_eq_reverb_dict(mix=40.0)).to(torch.float32)
    assert c.settings.dtype == torch.float64
    x = _noise(1, 1, 4000).double()
    np.testing.assert_allclose(c(x, 16000).numpy(), c.process(x, 16000, c.settings[None]).numpy())


# ---------------------------------------------------------------------------------------
# The register_effect example of fx.effect's docstring
# ---------------------------------------------------------------------------------------


def _docstring_example() -> str:
    lines = fx.effect.__doc__.split("Registering your own differentiable effect::\n", 1)[1].splitlines()
    block = []
    for line in lines:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block)


def test_docstring_example_effect_works_inside_a_chain(registry):
    namespace = {"__name__": "docstring_example"}
    exec(_docstring_example(), namespace)
    chain = namespace["chain"]
    assert chain.spec == "eq,tremolo"
    sr = 8000
    x = _noise(1, 2, sr)
    u = chain.neutral_unit(torch.float64)
    u[-1] = 0.6  # depth 0.6 (linear over [0, 1]); the EQ stays flat
    t = np.arange(sr) / sr
    expected = x.numpy() * (1 - 0.6 * 0.5 * (1 - np.cos(2 * np.pi * 5 * t)))
    np.testing.assert_allclose(chain(x, sr, u.float()[None]).numpy(), expected, atol=1e-5)


def test_docstring_example_effect_is_validated_by_the_base_class(registry):
    namespace = {"__name__": "docstring_example"}
    exec(_docstring_example(), namespace)
    tremolo = fx.create_effect("tremolo")
    with pytest.raises(ValueError, match="sample_rate"):
        tremolo(torch.zeros(1, 1, 100), 1000, {"depth": 0.5})
