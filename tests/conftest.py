"""Suite-wide settings: matrix-product plans measured during the tests go to a file of the session's
own (removed at the end), never to the user's ~/.cache/gradlang."""
import os
import shutil
import tempfile

_PLANS_DIR = tempfile.mkdtemp(prefix="gradlang-test-plans-")
os.environ["GRADLANG_MATMUL_PLANS"] = os.path.join(_PLANS_DIR, "matmul-plans.json")


def pytest_unconfigure(config):
    shutil.rmtree(_PLANS_DIR, ignore_errors=True)
