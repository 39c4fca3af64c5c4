"""Run a module as on the Pi, where torch is not installed: `python without_torch.py -m module args...`
or `python without_torch.py script.py args...`. Any import of torch (or of a package that needs it) fails.
For a command that starts Pythons of its own, put no_torch_site/ first on PYTHONPATH instead."""

import runpy
import sys
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parent / "no_torch_site" / "sitecustomize.py"))  # installs the blocker

if sys.argv[1] == "-m":
    sys.argv = [sys.argv[2], *sys.argv[3:]]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
