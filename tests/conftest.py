"""Shared fixtures: CLAP model files that need no network, and one CPU embedder for the whole session.

`clap_checkpoint` is a randomly initialised HTSAT-tiny CLAP saved in laion-clap's released format (~600 MB
in a temporary folder, built once per session); `clap_tokenizer_dir` is a small byte-level BPE tokenizer.
Both are built by `text2fx.testing`, which benchmarks use too.

Every test that needs the CLAP model (its code, files or weights) is marked `clap`, here rather than by hand:
those using a CLAP fixture and those in the CLAP modules. Whole-job features (batch workers, the report page
and its browser tests) are marked `slow`. `pytest -m "not clap and not slow"` runs the unit tests (fx, the
optimizer, the options layer, the pipeline on the cheap test embedder) on their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from text2fx.testing import make_random_clap_checkpoint, make_test_tokenizer

CLAP_FIXTURES = {"clap_checkpoint", "clap_tokenizer_dir", "clap_embedder", "cuda_clap_embedder"}
CLAP_MODULES = {"test_clap.py", "test_clap_equivalence.py", "test_clap_files.py", "test_htsat_frontend.py"}
# End-to-end features that run whole jobs, worker processes or a browser: seconds to a minute each.
SLOW_MODULES = {"test_batch.py", "test_batch_workers.py", "test_report_page.py", "test_report_browser.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in CLAP_MODULES or CLAP_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.clap)
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _no_disk_text_cache():
    """Tests neither read nor fill the user's on-disk text embedding cache, so they do not depend on each other's
    order or on earlier runs (tests/test_clap_cache.py turns it on, in a temporary folder, where it is tested)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TEXT2FX_TEXT_CACHE", "0")
    yield
    patch.undo()


@pytest.fixture(scope="session")
def clap_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a test `vocab.json` + `merges.txt` usable as the CLAP tokenizer."""
    return make_test_tokenizer(tmp_path_factory.mktemp("clap_tokenizer"))


@pytest.fixture(scope="session")
def clap_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-weight HTSAT-tiny CLAP checkpoint in laion-clap's released format."""
    return make_random_clap_checkpoint(tmp_path_factory.mktemp("clap_ckpt") / "random-tiny.pt", "tiny", seed=0)


@pytest.fixture(scope="session")
def clap_embedder(clap_checkpoint: Path, clap_tokenizer_dir: Path):
    """A `ClapEmbedder` on the CPU over `clap_checkpoint`; shared, so do not mutate it."""
    from text2fx.clap import ClapEmbedder

    return ClapEmbedder(clap_checkpoint, clap_tokenizer_dir, device="cpu")


@pytest.fixture(scope="session")
def cuda_clap_embedder(clap_checkpoint: Path, clap_tokenizer_dir: Path):
    """The same random CLAP on the GPU (tests using it are skipped where there is none)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from text2fx.clap import ClapEmbedder

    return ClapEmbedder(clap_checkpoint, clap_tokenizer_dir, device="cuda")
