"""Run a module as on the Pi, where torch is not installed: `python without_torch.py -m module args...`
or `python without_torch.py script.py args...`. Any import of torch (or of a package that needs it) fails."""

import importlib.abc
import runpy
import sys

BLOCKED = ("torch", "torchao", "executorch", "litert_torch")


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: this process stands for a device without torch)")
        return None


sys.meta_path.insert(0, NoTorch())
if sys.argv[1] == "-m":
    sys.argv = [sys.argv[2], *sys.argv[3:]]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
