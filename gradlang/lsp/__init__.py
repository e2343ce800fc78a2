"""Editor support for .grad files: `analysis` computes diagnostics, hovers, definitions and completions
from a document's text with no dependency on any editor protocol; `server` speaks the Language Server
Protocol over stdio on top of it (needs the optional `pygls`: `pip install 'gradlang[lsp]'`)."""

MISSING_PYGLS = "the language server needs pygls: pip install 'gradlang[lsp]' (or pip install 'pygls>=2')"


def run(argv: list[str] | None = None) -> int:
    """Start the server on stdio; exit status 1 with a hint when pygls is not installed."""
    import sys
    try:
        from .server import main
    except ImportError as err:
        if (err.name or "").split(".")[0] not in ("pygls", "lsprotocol", "cattrs"):
            raise
        print(f"gradlang lsp: {MISSING_PYGLS}", file=sys.stderr)
        return 1
    return main(argv)
