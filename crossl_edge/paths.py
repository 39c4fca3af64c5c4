"""Default locations shared by the training, export and runtime commands (standard library only)."""

from pathlib import Path

#: The run folder `make demo` (the README's main job) writes, and the one export takes by default.
DEFAULT_RUN = Path("runs/demo")

#: Where `python -m crossl_edge.export` writes bundles: export/<name>/ (contents git-ignored).
EXPORT_ROOT = Path("export")
