"""Front end: text → AST."""
from .parser import parse, parse_file

__all__ = ["parse", "parse_file"]
