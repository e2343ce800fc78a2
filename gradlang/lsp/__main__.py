"""`python -m gradlang.lsp`: the language server on stdin/stdout."""
import sys

from . import run

sys.exit(run())
