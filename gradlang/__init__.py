"""gradlang: a declarative language for machine-learning models, compiled to a gradient graph and run
by a NumPy interpreter.

    import gradlang
    prog = gradlang.compile("examples/moons_mlp.grad")
    result = prog.train()
"""
from .api import OPTIMIZATIONS, InputInfo, Program, compile
from .errors import GradError

__all__ = ["compile", "Program", "InputInfo", "GradError", "OPTIMIZATIONS"]
__version__ = "0.1.0"


def load_ipython_extension(ipython):
    """`%load_ext gradlang` in IPython or Jupyter: the `%%gradlang` cell magic (see gradlang/notebook.py)."""
    from .notebook import load_ipython_extension as load
    load(ipython)
