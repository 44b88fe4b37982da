"""The optimizer's batched loop (all targets, restarts and excerpts in one batch, no host sync per step,
best iterate tracked on the device) computes what a plain loop computes: one candidate at a time,
`torch.roll`, `.item()` every step, as the paper's code does. Tolerance: parameters and losses within 1e-4 after
the same steps (batching changes float summation order, nothing else; Adam then amplifies those last-digit
differences a little every step, which is why the runs are kept short)."""

import pytest
import torch
import torch.nn.functional as F

import fx
from doubles import SpectralTestEmbedder
from text2fx.optimize import Recipe, draw_randomness, optimize


def plain_loop(chain, embedder, clips, sr, text, anchor, z0, shifts, recipe, directional):
    """One candidate, step by step. `clips` (E, C, T) are one input's excerpts; `shifts` (steps, E)."""
    with torch.no_grad():
        reference = embedder.embed_audio(clips, sr)
    z = z0.to(clips.device).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=recipe.lr)
    best, best_u = float("inf"), None
    for step in range(recipe.steps):
        u = torch.sigmoid(z)
        x = clips
        if shifts is not None:
            x = torch.stack([torch.roll(c, int(s), -1) for c, s in zip(clips, shifts[step])])
        emb = embedder.embed_audio(chain.process(x, sr, u.expand(len(clips), -1)), sr)
        if directional:
            loss = (1 - F.cosine_similarity(emb - reference, text - anchor, dim=-1)).mean()
        else:
            loss = (1 - F.cosine_similarity(emb, text, dim=-1)).mean()
        if loss.item() < best:
            best, best_u = loss.item(), u.detach().cpu()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return best_u, best


def compare(chain, embedder, clips, sr, input_index, texts, anchors, recipe, seed=0, cuda_graph=None):
    outcomes = optimize(chain, embedder, clips, sr, input_index, texts, anchors, recipe, seed, cuda_graph=cuda_graph)
    k = recipe.restarts * (2 if recipe.loss == "best" else 1)
    n_exc = clips.shape[1]
    for t, (outcome, i) in enumerate(zip(outcomes, input_index)):
        c = outcome.candidate
        z0, shifts = draw_randomness(chain.neutral_unit(), k, k * n_exc, clips.shape[-1], recipe, seed, key=t)
        directional = recipe.loss == "directional" or (recipe.loss == "best" and c >= recipe.restarts)
        cand_shifts = None if shifts is None else shifts[:, c * n_exc : (c + 1) * n_exc]
        best_u, best = plain_loop(chain, embedder, clips[i], sr, texts[t : t + 1], anchors[t : t + 1], z0[c],
                                  cand_shifts, recipe, directional)
        assert torch.allclose(outcome.candidate_params, best_u, atol=1e-4), (outcome.candidate_params - best_u).abs().max()
        assert min(outcome.history) == pytest.approx(best, abs=1e-4)
    return outcomes


@pytest.mark.parametrize("loss", ["cosine", "directional", "best"])
def test_batched_loop_equals_plain_loop(loss):
    sr = 48000  # every reverb band lies below Nyquist, so no parameter's gradient is float noise
    embedder = SpectralTestEmbedder(sample_rate=sr, window_seconds=0.5)
    chain = fx.Chain.from_spec("eq,reverb", seed=3)
    g = torch.Generator().manual_seed(0)
    clips = 0.1 * torch.randn(2, 2, 2, sr // 2, generator=g)  # 2 inputs x 2 excerpts, stereo, 0.5 s
    texts = embedder.embed_text(["a", "b", "c"])
    anchors = embedder.embed_text(["not a", "not b", "not c"])
    recipe = Recipe(steps=4, lr=0.01, loss=loss, restarts=2, patience=None)
    compare(chain, embedder, clips, sr, [0, 1, 1], texts, anchors, recipe)


def test_batched_loop_equals_plain_loop_through_clap(clap_embedder):
    sr = 48000
    chain = fx.Chain.from_spec("eq,reverb", seed=0)
    clips = 0.1 * torch.randn(1, 1, 2, 3 * sr, generator=torch.Generator().manual_seed(1))
    texts = clap_embedder.embed_text(["this sound is warm", "this sound is cold"])
    anchors = clap_embedder.embed_text(["this sound is not warm", "this sound is not cold"])
    recipe = Recipe(steps=3, lr=0.01, restarts=1, patience=None)
    compare(chain, clap_embedder, clips, sr, [0, 0], texts, anchors, recipe)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_graph_loop_equals_plain_loop_through_clap(cuda_clap_embedder):
    """The fastest path (CUDA graph replay, capturable Adam) against the plain eager loop on the same GPU."""
    sr = 48000
    embedder = cuda_clap_embedder
    chain = fx.Chain.from_spec("eq,reverb", seed=0).to("cuda")
    clips = 0.1 * torch.randn(1, 2, 2, 3 * sr, generator=torch.Generator().manual_seed(1)).cuda()
    texts = embedder.embed_text(["this sound is warm", "this sound is cold"])
    anchors = embedder.embed_text(["this sound is not warm", "this sound is not cold"])
    recipe = Recipe(steps=4, lr=0.01, loss="best", restarts=1, patience=None)
    compare(chain, embedder, clips, sr, [0, 0], texts, anchors, recipe, cuda_graph=True)
