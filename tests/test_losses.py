import math

import pytest
import torch

from text2fx.losses import UNCHANGED_DIRECTIONAL_LOSS, cosine_loss, directional_loss


def test_cosine_loss_by_hand():
    audio = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    text = torch.tensor([[0.6, 0.8]])
    # cos([1,0],[.6,.8]) = .6; cos of a vector with itself = 1
    assert cosine_loss(audio, text).tolist() == pytest.approx([0.4, 0.0], abs=1e-7)


def test_directional_loss_by_hand():
    processed = torch.tensor([[1.0, 0.0, 0.0]])
    original = torch.tensor([[0.0, 1.0, 0.0]])
    text = torch.tensor([[0.0, 0.0, 1.0]])
    anchor = torch.tensor([[0.0, 1.0, 0.0]])
    # (1,-1,0) . (0,-1,1) = 1; both norms sqrt(2) -> cos 0.5
    assert directional_loss(processed, original, text, anchor).item() == pytest.approx(0.5, abs=1e-7)
    # moving exactly along the text direction gives 0, against it 2
    assert directional_loss(original + (text - anchor), original, text, anchor).item() == pytest.approx(0, abs=1e-6)
    assert directional_loss(original - (text - anchor), original, text, anchor).item() == pytest.approx(2, abs=1e-6)


def test_directional_loss_finite_when_nothing_changes():
    a = torch.tensor([[0.3, 0.4]], requires_grad=True)
    loss = directional_loss(a, a.detach(), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    loss.backward()
    assert loss.item() == pytest.approx(1.0)
    assert all(math.isfinite(g) for g in a.grad.flatten().tolist())


def test_losses_take_leading_dimensions_that_broadcast():
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(3, 2, 5, generator=g)  # (candidates, excerpts, dim)
    original = torch.randn(3, 2, 5, generator=g)
    text = torch.randn(3, 1, 5, generator=g)  # one text per candidate, shared by its excerpts
    anchor = torch.randn(3, 1, 5, generator=g)
    cos = cosine_loss(audio, text)
    direction = directional_loss(audio, original, text, anchor)
    assert cos.shape == direction.shape == (3, 2)
    for c in range(3):
        for e in range(2):
            assert cos[c, e].item() == pytest.approx(cosine_loss(audio[c, e][None], text[c])[0].item(), abs=1e-6)
            one = directional_loss(audio[c, e][None], original[c, e][None], text[c], anchor[c])[0].item()
            assert direction[c, e].item() == pytest.approx(one, abs=1e-6)


def test_unchanged_directional_loss_is_the_loss_of_no_change():
    x = torch.tensor([[0.3, 0.4, 0.5]])
    text, anchor = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    assert directional_loss(x, x, text, anchor).item() == UNCHANGED_DIRECTIONAL_LOSS == 1.0
