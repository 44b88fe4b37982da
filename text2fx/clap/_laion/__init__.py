"""laion-clap's model files (`laion_clap/clap_module/*.py`) as a package of their own; see `text2fx.clap.clap_module`.

Only `__path__` is set here, to laion-clap's `clap_module` folder, so `text2fx.clap._laion.model` imports
laion-clap's `model.py` (and its relative imports) without running `laion_clap/__init__.py` or
`clap_module/__init__.py`. Being a real package, its classes can be pickled and unpickled in a new process.
"""

import importlib.util
from pathlib import Path

_laion = importlib.util.find_spec("laion_clap")  # locates the package without executing it
if _laion is None or not _laion.submodule_search_locations:
    raise ImportError("laion-clap is not installed; install it with: pip install laion-clap==1.1.7")
__path__ = [str(Path(next(iter(_laion.submodule_search_locations))) / "clap_module")]
config_dir = Path(__path__[0]) / "model_configs"
del _laion
