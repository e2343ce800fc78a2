"""Front end: text → AST."""
from .parser import parse, parse_file, parse_setting

__all__ = ["parse", "parse_file", "parse_setting"]
