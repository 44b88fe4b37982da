import math

import pytest
import torch

from text2fx.losses import cosine_loss, directional_loss


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
