"""The frequency-domain path of linear chains and its parts: the one-sided rfft gradient, the time-domain
fractional delay, the EQ response built from its 2 s impulse response, and a chain of linear effects run as
one product of responses (optionally only its channel mean) against the same effects run one by one."""

import math

import pytest
import torch

import fx
from fx import functional as F


def _noise(batch, channels, n, seed=0, dtype=torch.float32):
    return 0.3 * torch.randn(batch, channels, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _one_by_one(chain, x, sr, u, mono=False):
    """The reference: every effect's own `process`, in order, then the channel mean."""
    u = u.to(x.dtype).clamp(0, 1)
    for effect, p in zip(chain, chain.unit_to_physical(u, sr)):
        x = effect.process(x.expand(u.shape[0], -1, -1), sr, p)
    return x.mean(1, keepdim=True) if mono else x


@pytest.mark.parametrize("n_fft", [16, 17, 40, 41])
@pytest.mark.parametrize("length", [5, 16])
def test_rfft_gradient_is_torchs(n_fft, length):
    x = torch.randn(3, length, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, n_fft // 2 + 1, dtype=torch.complex128)
    (torch.fft.rfft(x, n=n_fft) * weights).real.sum().backward()
    expected, x.grad = x.grad, None
    (F.rfft(x, n_fft) * weights).real.sum().backward()
    assert torch.allclose(x.grad, expected, atol=1e-12)
    # against finite differences too (fast mode: a random projection of the Jacobian, not 2 x 48 columns)
    assert torch.autograd.gradcheck(lambda v: torch.view_as_real(F.rfft(v, n_fft)), (x,), fast_mode=True)


def test_rfft_without_gradient_is_torchs():
    x = torch.randn(2, 100)
    assert torch.equal(F.rfft(x, 256), torch.fft.rfft(x, n=256))
    with pytest.raises(ValueError, match="do not fit"):
        F.rfft(x, 64)


def _delay_by_phase(x, delay, n_fft):
    """A linearly interpolated delay applied as a phase ramp on a grid long enough not to wrap."""
    w = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (2 * math.pi / n_fft)
    whole = torch.floor(delay)
    frac = (delay - whole)[:, None]
    taps = torch.polar(torch.ones_like(w), -w)
    h = torch.polar(torch.ones(len(delay), w.numel(), dtype=torch.float64), -whole[:, None] * w)
    h = h * ((1 - frac) + frac * taps)
    return torch.fft.irfft(torch.fft.rfft(x, n=n_fft) * h[:, None, :], n=n_fft)


def test_fractional_delay_equals_a_phase_ramp_and_an_integer_delay_is_a_shift():
    x = _noise(4, 2, 300, dtype=torch.float64)
    delay = torch.tensor([0.0, 3.0, 17.25, 40.0], dtype=torch.float64)
    y = F.fractional_delay(x, delay, max_delay=40.0)
    assert y.shape == (4, 2, 300 + 41)
    assert torch.allclose(y, _delay_by_phase(x, delay, 512)[..., :341], atol=1e-12)
    assert torch.equal(y[1, :, 3:303], x[1]) and torch.equal(y[1, :, :3], torch.zeros(2, 3, dtype=torch.float64))


def test_fractional_delay_gradient_to_the_delay():
    x = _noise(2, 1, 64, dtype=torch.float64)
    delay = torch.tensor([2.3, 7.6], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: F.fractional_delay(x, d, max_delay=10.0), (delay,))


@pytest.mark.parametrize("sr", [8000, 48000, 192000])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
def test_eq_response_from_its_impulse_response_equals_direct_evaluation(sr, dtype, tol):
    eq = fx.ParametricEQ()
    u = torch.rand(4, eq.num_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = eq.unit_to_physical(u)
    n_fft = F.next_fast_len(3 * sr)
    sos = F.eq_sos(sr, **params)
    direct = F.sos_frequency_response(sos, torch.arange(n_fft // 2 + 1, dtype=torch.float64), n_fft)
    response = F.eq_response(n_fft, sr, dtype, **{k: v.to(dtype) for k, v in params.items()})
    assert response.shape == direct.shape
    err = (response.to(torch.complex128) - direct).abs().max() / direct.abs().max()
    assert err < tol


SPECTRAL_CHAINS = ["eq,reverb", "reverb,eq", "gain,eq,gain,reverb", "eq,eq", "reverb"]


def _linear_chain(spec, seed):
    """`spec` with reverbs whose IR (0.2 s) is no longer than the test clips (0.2-0.25 s): the IR's end and the
    clip's are both inside the output, and the reverb's noise table (built once per rate, channel count and
    dtype) costs a fortieth of the default 8 s one; the path taken is the same at any IR length."""
    effects = [fx.NoiseReverb(seed=seed, ir_length_s=0.2) if n == "reverb" else fx.create_effect(n)
               for n in spec.split(",")]
    return fx.Chain(effects, seed=seed)


RATES_CHANNELS = [(16000, 1), (44100, 2), (96000, 3)]


# every chain shape at every rate / channel count, mono and whole alternating along both, so each shape and each
# rate / channel count is checked both ways (mono takes the channel mean before the shared responses: the same
# step for every shape and rate)
@pytest.mark.parametrize(
    "spec, sr, channels, mono",
    [
        (spec, sr, ch, (i + j) % 2 == 1)
        for i, spec in enumerate(SPECTRAL_CHAINS)
        for j, (sr, ch) in enumerate(RATES_CHANNELS)
    ],
)
def test_linear_chain_in_the_frequency_domain_equals_effects_one_by_one(spec, sr, channels, mono):
    chain = _linear_chain(spec, seed=2)
    assert chain.linear
    x = _noise(3, channels, sr // 4, dtype=torch.float64)
    u = torch.rand(3, chain.num_params, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = chain.process(x, sr, u, mono=mono)
    expected = _one_by_one(chain, x, sr, u, mono)
    assert y.shape == expected.shape == (3, 1 if mono else channels, sr // 4)
    assert (y - expected).abs().max() < 1e-9 * expected.abs().max()
    # float32, as the optimizer runs it
    y32 = chain.process(x.float(), sr, u.float(), mono=mono)
    # float32 rounding (the sharp-band IR and the cross-feed add a little over the 1e-4 this had before)
    assert (y32 - expected).abs().max() < 2e-4 * expected.abs().max()


@pytest.mark.parametrize("mono", [False, True])
def test_linear_chain_gradients_equal_effects_one_by_one(mono):
    sr = 48000
    chain = _linear_chain("eq,reverb", seed=1)
    x = _noise(2, 2, sr // 5, dtype=torch.float64)
    target = _noise(2, 1 if mono else 2, sr // 5, seed=9, dtype=torch.float64)
    grads = []
    for run in (lambda u: chain.process(x, sr, u, mono=mono), lambda u: _one_by_one(chain, x, sr, u, mono)):
        u = torch.rand(2, chain.num_params, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        u.requires_grad_(True)
        (run(u) - target).square().mean().backward()
        grads.append(u.grad)
    assert grads[0].abs().min() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-7, atol=1e-12)


def test_a_broadcast_input_gives_what_the_input_repeated_per_item_gives():
    chain = fx.Chain.from_spec("eq,reverb")
    x = _noise(1, 2, 8000)
    u = torch.rand(3, chain.num_params, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(chain.process(x, 16000, u), chain.process(x.expand(3, -1, -1).clone(), 16000, u))


def test_mono_of_a_nonlinear_chain_is_the_channel_mean():
    chain = fx.Chain.from_spec("eq,distortion,reverb")
    assert not chain.linear
    x = _noise(2, 2, 4000)
    u = torch.rand(2, chain.num_params, generator=torch.Generator().manual_seed(6))
    assert torch.equal(chain.process(x, 16000, u, mono=True), chain.process(x, 16000, u).mean(1, keepdim=True))


def test_gains_alone_stay_exact():
    chain = fx.Chain.from_spec("gain,gain")
    x = _noise(1, 2, 1000)
    u = torch.tensor([[0.75, 0.25]])  # +12 dB then -12 dB
    y = chain.process(x, 16000, u)
    assert torch.equal(y, x * fx.functional.db_to_amp(torch.tensor(12.0)) * fx.functional.db_to_amp(torch.tensor(-12.0)))


def test_a_crop_of_the_input_gives_a_prefix_of_the_output():
    # what lets the optimizer work on excerpts and the renderer on chunks: truncation never wraps around
    chain = fx.Chain.from_spec("eq,reverb", seed=4)
    sr = 16000
    x = _noise(1, 2, 3 * sr, dtype=torch.float64)
    u = torch.rand(1, chain.num_params, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    full = chain.process(x, sr, u)
    crop = chain.process(x[..., : sr // 2], sr, u)
    assert torch.allclose(crop, full[..., : sr // 2], atol=1e-10)


def test_effect_without_a_response_says_so():
    with pytest.raises(NotImplementedError, match="not a linear effect"):
        fx.Distortion().frequency_response(torch.zeros(1, 1, 8), 16000, {}, 16)
