"""The data the project is given, `../shared/data` beside the clone (CI puts it there), and the mark
for tests that need its real MNIST files: they skip, saying why, where it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").exists(),
                                 reason=f"the real MNIST files are not in {SHARED_DATA / 'mnist'} "
                                        "(CI puts shared/ beside the clone)")
