"""Syntax highlighting for .grad files: the word lists every highlighter shares, and a Pygments lexer.

The Pygments lexer is registered as the `gradlang` lexer through the `pygments.lexers` entry point
(`pygmentize -l gradlang model.grad`, ```` ```grad ```` blocks in Sphinx or MkDocs); Pygments itself is the
optional `docs` extra. The TextMate grammar in editors/textmate/ uses the same lists, and the tests check
both against the compiler's keywords, builtins and standard library, so neither falls behind.
"""
from __future__ import annotations

KEYWORDS_IMPORT = ("import", "from", "as")
KEYWORDS_DECLARATION = ("input", "param", "data", "fn", "layer", "forward", "loss", "metric", "output",
                        "train")
KEYWORDS_CONTROL = ("for", "in", "if", "else", "return", "assert")
CONSTANTS = ("true", "false")
DTYPES = ("f32", "f64", "i32", "i64", "bool")
# names the train block and layer bodies define
SPECIAL_NAMES = ("step", "self")
BUILTINS = (
    "abs", "adagrad", "adam", "adamw", "argmax", "avg_pool2d", "blobs", "broadcast_to", "causal_mask",
    "concat", "constant", "conv2d", "conv2d_transpose", "cos", "csv", "digit_sequences", "dot",
    "dropout_mask", "exp", "float", "floor", "gaussian_ring", "glorot_normal", "glorot_uniform", "grad",
    "he_normal", "he_uniform", "idx", "int", "len", "line", "log", "logsumexp", "matmul", "max",
    "max_pool2d", "maximum", "mean", "min", "minimum", "mnist", "normal", "npz", "one_hot", "ones", "phase",
    "random_normal", "range", "relu", "reshape", "rmsprop", "sgd", "sigmoid", "sign", "sin", "skipgrams",
    "softmax", "softmax_cross_entropy", "spirals", "split", "sqrt", "stack", "stop_gradient", "sum",
    "take", "tanh", "text_chars", "transpose", "two_moons", "uniform", "where", "xavier_normal",
    "xavier_uniform", "xor", "zeros",
)
# the standard library's top-level functions and layers (stdlib/*.grad)
STDLIB = (
    "accuracy", "attention", "binary_cross_entropy", "conv2d", "cosine_decay", "cross_entropy", "dense",
    "dropout", "elu", "embedding", "exponential_decay", "flatten", "gelu", "gru_cell", "hinge", "identity",
    "l1", "l2", "layer_norm", "leaky_relu", "linear_decay", "log_sigmoid", "log_softmax", "lstm_cell",
    "masked_fill", "mlp", "mse", "multi_head_attention", "rnn_cell", "softplus", "step_decay",
    "sum_of_squares", "swap_last", "swish", "transformer_block", "unroll", "warmup", "zeros_state",
)

try:
    from pygments.lexer import RegexLexer, bygroups, words
    from pygments.token import (Comment, Keyword, Name, Number, Operator, Punctuation, String, Text,
                                Whitespace)
except ImportError:       # pygments is optional: the lists above are still useful without it
    RegexLexer = None

if RegexLexer is not None:
    _NOT_ATTRIBUTE = r"(?<![\w.])"      # `nn.dense`: `dense` after a dot is the module's, not a builtin

    class GradlangLexer(RegexLexer):
        """Pygments lexer for gradlang (.grad) programs and modules."""

        name = "gradlang"
        aliases = ["gradlang", "grad"]
        filenames = ["*.grad"]
        mimetypes = ["text/x-gradlang"]

        tokens = {
            "root": [
                (r"^([ \t]*)(import|from)([ \t]+)([A-Za-z_][\w.]*)",
                 bygroups(Whitespace, Keyword.Namespace, Whitespace, Name.Namespace)),
                (r"[ \t\f]+", Whitespace),
                (r"\\[ \t\f]*\r?\n", Text),                      # line continuation
                (r"\r?\n", Whitespace),
                (r"#.*?$", Comment.Single),
                (r'"', String.Double, "string"),
                (_NOT_ATTRIBUTE + r"(fn|layer)([ \t]+)([A-Za-z_]\w*)",
                 bygroups(Keyword.Declaration, Whitespace, Name.Function)),
                (words(KEYWORDS_IMPORT, prefix=_NOT_ATTRIBUTE, suffix=r"\b"), Keyword.Namespace),
                (words(KEYWORDS_DECLARATION, prefix=_NOT_ATTRIBUTE, suffix=r"\b"), Keyword.Declaration),
                (words(KEYWORDS_CONTROL, prefix=_NOT_ATTRIBUTE, suffix=r"\b"), Keyword),
                (words(CONSTANTS, prefix=_NOT_ATTRIBUTE, suffix=r"\b"), Keyword.Constant),
                (words(DTYPES, prefix=_NOT_ATTRIBUTE, suffix=r"\b"), Keyword.Type),
                (words(SPECIAL_NAMES, prefix=_NOT_ATTRIBUTE, suffix=r"\b"), Name.Builtin.Pseudo),
                (words(sorted(set(BUILTINS) | set(STDLIB)), prefix=_NOT_ATTRIBUTE, suffix=r"\b"), Name.Builtin),
                (r"[A-Za-z_]\w*", Name),
                (r"(\d+\.\d*|\.\d+)([eE][+-]?\d+)?|\d+[eE][+-]?\d+", Number.Float),
                (r"\d+", Number.Integer),
                (r"\*\*|==|!=|<=|>=|[-+*/@<>=]", Operator),
                (r"[()\[\]{},:.]", Punctuation),
            ],
            "string": [
                (r'\\.', String.Escape),
                (r'[^"\\\n]+', String.Double),
                (r'"', String.Double, "#pop"),
                (r"\n", Whitespace, "#pop"),                     # unterminated: the string ends here
            ],
        }
