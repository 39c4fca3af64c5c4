"""Put this folder first on PYTHONPATH and every Python started with it (children included) stands for a
device without torch: any import of torch, or of a package that needs it, fails. See without_torch.py."""

import importlib.abc
import sys

BLOCKED = ("torch", "torchao", "executorch", "litert_torch")


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: this process stands for a device without torch)")
        return None


if not any(isinstance(f, NoTorch) for f in sys.meta_path):
    sys.meta_path.insert(0, NoTorch())
