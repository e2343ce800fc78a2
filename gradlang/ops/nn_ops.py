"""Primitives for deep-learning layers, each defined once: shape rule, kernel factory, VJP rule.

- **Convolution** (NCHW, stride, zero padding, dilation and groups): `conv2d(x, w)`, with two
  companions that are its derivatives — `conv2d_transpose(g, w)` (the adjoint in x: a transposed
  convolution) and `conv2d_filter_grad(x, g)` (the derivative in w). The three are bilinear and closed under VJP:
  each one's cotangents are the other two, so gradients of gradients work. Kernels copy the
  sliding windows of a channels-last copy of the image into rows (im2col, channels innermost) and
  contract them with one matrix product (BLAS) per chunk of the batch: no loop over pixels. The
  transposed convolution adds each of the KH·KW offsets' products back into the image, or, at
  stride 1 with enough weights per channel, is a convolution of the padded gradient with flipped
  filters (`BY_CONVOLUTION_MIN`).
  Dilation or groups (attrs present only when not 1) take `GroupedConv2d`'s kernels, the same
  gathering with taps `dilation` apart and one batched product over the groups; the ordinary
  convolution keeps its own kernels, untouched.
- **Windows**: `patches2d(x)` lays out every (strided, padded) window of x on two new trailing axes,
  `[N, C, OH, OW, KH, KW]`; its adjoint `patches2d_transpose` adds windows back into an image.
  Average pooling is `reduce_sum` over the window axes.
- **Max pooling**: `max_pool2d(x)`, its VJP `max_pool2d_grad(x, g)` (g routed to each window's first
  maximum) and that one's adjoint in g, `max_pool2d_select(x, u)` (u read at those maxima). The
  routing is piecewise constant in x, so x gets no gradient from the two companions.
- **Gather**: `take(x, indices)` picks slices of x along an axis by integer indices (an embedding
  lookup); its adjoint `scatter_add(g, indices)` adds rows back (repeated indices accumulate).
- **Joining**: `concat(x0, x1, …)` along an axis; its VJP slices the cotangent (`slice` exists).
- **Masks**: `causal_mask`, attention's causal mask when a sequence length is symbolic.
- **Noise**: `random_normal`, standard normal samples drawn every run (a GAN generator's input), and
  `random_uniform`, uniform samples in [0, 1) (Bernoulli draws, `u < p`).

Integer index operands receive no gradient.
"""
from __future__ import annotations

import copy

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import helper
from .registry import CONTRACTION, MOVES_DATA, REDUCTION, IndexOperand, define
from .shapes import DTYPES, FLOATS, INTS, ShapeError, fmt_shape, fmt_type, normalize_axes

# ---- checks and attributes -----------------------------------------------------------------------

def _pair(value, name: str, low: int) -> tuple[int, int]:
    """An int or a pair of ints (≥ low), as a pair."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in pair):
        raise ShapeError(f"{name} must be an integer ≥ {low} or a pair of them, got {value!r}")
    return pair


def _need_floats(op: str, shapes, dtypes) -> str:
    for shape, dt in zip(shapes, dtypes):
        if dt not in FLOATS:
            raise ShapeError(f"{op} needs float operands, got {fmt_type(shape, dt)}")
    if len(set(dtypes)) > 1:
        raise ShapeError(f"{op}: operand types differ: " + ", ".join(fmt_type(s, d) for s, d in zip(shapes, dtypes)))
    return dtypes[0]


def _image(op: str, shape, what: str = "input") -> None:
    """A rank-4 NCHW shape whose channel and spatial dims are known integers (the batch may be symbolic)."""
    if len(shape) != 4:
        raise ShapeError(f"{op} needs a rank-4 [N, C, H, W] {what}, got {fmt_shape(shape)}")
    if not all(isinstance(d, int) for d in shape[1:]):
        raise ShapeError(f"{op}: the channel and spatial dimensions of the {what} must be known integers, "
                         f"got {fmt_shape(shape)}")


def _filters(op: str, shape) -> None:
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape):
        raise ShapeError(f"{op} needs filters [O, C, KH, KW] of known sizes, got {fmt_shape(shape)}")


def _window_attrs(op: str, attrs: dict) -> tuple:
    """Check stride and padding; store them normalised in attrs; return (stride, padding)."""
    stride = attrs["stride"] = _pair(attrs.get("stride", 1), f"{op} stride", 1)
    padding = attrs["padding"] = _pair(attrs.get("padding", 0), f"{op} padding", 0)
    return stride, padding


def _conv_options(op: str, attrs: dict) -> tuple:
    """Check a convolution's dilation and groups; return (dilation, groups). Stored in attrs only when
    not the defaults (1 and 1), so that an ordinary convolution's node reads as it always has."""
    dilation = _pair(attrs.pop("dilation", 1), f"{op} dilation", 1)
    groups = attrs.pop("groups", 1)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ShapeError(f"{op} groups must be a positive integer, got {groups!r}")
    if dilation != (1, 1):
        attrs["dilation"] = dilation
    if groups != 1:
        attrs["groups"] = groups
    return dilation, groups


def _conv_attrs(attrs: dict) -> dict:
    """A convolution node's attrs its companions (its VJPs) take over: stride, padding and, when not the
    defaults, dilation and groups."""
    return {k: attrs[k] for k in ("stride", "padding", "dilation", "groups") if k in attrs}


def _is_plain(attrs: dict) -> bool:
    """No dilation and one group: the fast kernels of the ordinary convolution apply."""
    return "dilation" not in attrs and "groups" not in attrs


def _check_groups(op: str, groups: int, channels: int, out_channels: int) -> None:
    if channels % groups or out_channels % groups:
        raise ShapeError(f"{op}: groups: {groups} must divide both channel counts, but the input has {channels} "
                         f"channels and the output {out_channels}")


def _span(kernel: tuple, dilation: tuple) -> tuple:
    """The extent of a kernel whose taps are `dilation` apart: d·(k − 1) + 1."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))


def _out_size(op: str, size: tuple, kernel: tuple, stride: tuple, padding: tuple,
              dilation: tuple = (1, 1)) -> tuple[int, int]:
    out = []
    span = _span(kernel, dilation)
    for n, k, s, p in zip(size, span, stride, padding):
        if n + 2 * p < k:
            window = f"a {kernel[0]}×{kernel[1]} window" + (
                "" if dilation == (1, 1) else f" dilated by {dilation} (spanning {span[0]}×{span[1]})")
            raise ShapeError(f"{op}: {window} does not fit a {size[0]}×{size[1]} image padded by {padding}")
        out.append((n + 2 * p - k) // s + 1)
    return tuple(out)


def _windows(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple, fill=0.0) -> np.ndarray:
    """Every window of the NCHW array x: a strided view [N, C, OH, OW, KH, KW] (of a padded copy if padded)."""
    (ph, pw), (sh, sw) = padding, stride
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    return sliding_window_view(x, kernel, axis=(2, 3))[:, :, ::sh, ::sw]


# The windows of a whole batch, laid out for one matrix product, take N·OH·OW·C·KH·KW elements — 3 GB
# for 10,000 MNIST images in a 5×5 layer of 16 channels. Kernels therefore work through the batch in
# chunks of at most this many window elements, one product per chunk. The size is the cache's, not
# only memory's: a chunk's windows (2 MB in float32) are still in cache when its product reads them,
# which makes gathering and multiplying a chunk at a time about 10% faster per step than the whole
# batch at once (benchmarks/cnn.grad, one thread), and a product of 512K elements is still BLAS-sized.
CHUNK_ELEMENTS = 1 << 19


def _batch_chunks(n: int, per_example: int, balanced: bool = False):
    """Slices covering range(n), each holding at most CHUNK_ELEMENTS / per_example examples (≥ 1). The
    plan depends on the shapes alone, so a sum over chunks adds the same numbers in the same order
    whichever threads compute them (helper.shared). `balanced`: an even number of chunks of sizes
    differing by at most one, so that two threads sharing them finish together — for kernels whose
    examples are computed independently (a sum over chunks keeps the plain plan: changing it would
    change its rounding)."""
    step = max(1, CHUNK_ELEMENTS // max(per_example, 1))
    if not balanced:
        return [slice(start, min(start + step, n)) for start in range(0, n, step)]
    count = -(-n // step)
    count = min(n, count + count % 2) if count > 1 else count
    bounds = [n * k // count for k in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


class Chunked:
    """A kernel that works through the batch in chunks; `each(body, count)` runs the chunks — in order,
    or (`spread()`, the scheduler's "helper-thread" rewrite) shared with the helper thread."""

    __slots__ = ("each",)

    def __init__(self):
        self.each = helper.in_order

    def spread(self) -> Chunked:
        other = copy.copy(self)
        other.each = helper.shared
        return other


def _add_windows(cols: np.ndarray, size: tuple, kernel: tuple, stride: tuple, padding: tuple,
                 dtype) -> np.ndarray:
    """The adjoint of `_windows`: cols [KH, KW, N, C, OH, OW] added back into an [N, C, H, W] image."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, oh, ow = cols.shape[2:]
    out = np.zeros((n, c, size[0] + 2 * ph, size[1] + 2 * pw), dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += cols[i, j]
    return out[:, :, ph:ph + size[0], pw:pw + size[1]] if ph or pw else out


def _nhwc(x: np.ndarray, padding: tuple) -> np.ndarray:
    """The NCHW array x as a channels-last copy [N, H + 2·ph, W + 2·pw, C], zero-padded."""
    n, c, h, w = x.shape
    (ph, pw) = padding
    out = (np.zeros if ph or pw else np.empty)((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    out[:, ph:ph + h, pw:pw + w, :] = x.transpose(0, 2, 3, 1)
    return out


def _im2col(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple) -> np.ndarray:
    """Every window of the NCHW array x as a row [N·OH·OW, KH·KW·C], channels innermost: copied from
    a channels-last image, each window row is KH·KW runs of C contiguous values rather than C·KH
    runs of KW, which makes the gathering copy several times faster than from NCHW."""
    (kh, kw), (sh, sw) = kernel, stride
    windows = sliding_window_view(_nhwc(x, padding), kernel, axis=(1, 2))[:, ::sh, ::sw]  # [N, OH, OW, C, KH, KW]
    n, oh, ow, c = windows.shape[:4]
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    cols[...] = windows.transpose(0, 1, 2, 4, 5, 3)
    return cols.reshape(n * oh * ow, kh * kw * c)


def _image_windows(x: np.ndarray, kernel: tuple, padding: tuple) -> np.ndarray:
    """Every window of the NCHW array x (stride 1), image by image: [N, C·KH·KW, OH·OW], in the order
    of the filters' own [O, C, KH, KW] layout. Copied a tap at a time from the padded image, in runs
    of OW contiguous values, where `_im2col` copies runs of C: the faster gather for an image of
    fewer channels than an output row has columns (a network's first layer: C = 1 or 3)."""
    (kh, kw), (ph, pw) = kernel, padding
    n, c, h, w = x.shape
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    if ph or pw:
        padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
        padded[:, :, ph:ph + h, pw:pw + w] = x
    else:
        padded = x
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = padded[:, :, i:i + oh, j:j + ow]
    return cols.reshape(n, c * kh * kw, oh * ow)


def _filter_rows(w: np.ndarray) -> np.ndarray:
    """Filters [O, C, KH, KW] as rows [O, KH·KW·C], in the order of _im2col's columns."""
    o = w.shape[0]
    return w.transpose(0, 2, 3, 1).reshape(o, -1)


def _channels_last_rows(g: np.ndarray) -> np.ndarray:
    """An NCHW array as rows [N·H·W, C]."""
    return g.transpose(0, 2, 3, 1).reshape(-1, g.shape[1])


# ---- convolution ---------------------------------------------------------------------------------

def _conv2d_infer(shapes, dtypes, attrs):
    x, w = shapes
    dtype = _need_floats("conv2d", shapes, dtypes)
    _image("conv2d", x)
    _filters("conv2d", w)
    dilation, groups = _conv_options("conv2d", attrs)
    _check_groups("conv2d", groups, x[1], w[0])
    if x[1] != w[1] * groups:
        if groups == 1:
            raise ShapeError(f"conv2d: the input has {x[1]} channels but the filter {fmt_shape(w)} expects {w[1]}")
        raise ShapeError(f"conv2d: the input's {x[1]} channels in {groups} groups are {x[1] // groups} per group, "
                         f"but the filter {fmt_shape(w)} expects {w[1]} per group")
    stride, padding = _window_attrs("conv2d", attrs)
    oh, ow = _out_size("conv2d", x[2:], w[2:], stride, padding, dilation)
    return (x[0], w[0], oh, ow), dtype


class Conv2d:
    """The kernels of conv2d and of its filter gradient for one input shape and filter size: both
    multiply the input's windows, gathered a chunk of the batch at a time — as rows [n·OH·OW,
    KH·KW·C] (`_im2col`), or, at stride 1 for an image with fewer channels than an output row has
    columns, image by image [n, C·KH·KW, OH·OW] (`_image_windows`: the MNIST CNN's first layer's
    forward product 1.58 → 0.44 ms and its filter gradient 1.67 → 0.51 ms at batch 64, one thread;
    its second layer, 16 channels of 14 columns, is 2.2× slower that way)."""

    def __init__(self, attrs: dict, x_shape: tuple, kernel: tuple, out_channels: int):
        self.stride, self.padding, self.kernel = attrs["stride"], attrs["padding"], tuple(kernel)
        self.channels, self.out_channels = x_shape[1], out_channels
        self.oh, self.ow = _out_size("conv2d", x_shape[2:], self.kernel, self.stride, self.padding)
        self.per_example = self.channels * self.kernel[0] * self.kernel[1] * self.oh * self.ow
        self.by_image = self.stride == (1, 1) and self.channels < self.ow

    def forward(self, x, w, each=helper.in_order):
        o, oh, ow = self.out_channels, self.oh, self.ow
        out = np.empty((len(x), o, oh, ow), dtype=np.result_type(x, w))
        parts = _batch_chunks(len(x), self.per_example, balanced=True)
        if self.by_image:
            filters = w.reshape(o, -1)                                       # [O, C·KH·KW]

            def chunk(k):
                cols = _image_windows(x[parts[k]], self.kernel, self.padding)    # [n, C·KH·KW, OH·OW]
                np.matmul(filters, cols, out=out[parts[k]].reshape(-1, o, oh * ow))
        else:
            filters = _filter_rows(w).T                                      # [KH·KW·C, O]

            def chunk(k):
                cols = _im2col(x[parts[k]], self.kernel, self.stride, self.padding)  # [n·OH·OW, KH·KW·C]
                out[parts[k]] = (cols @ filters).reshape(-1, oh, ow, o).transpose(0, 3, 1, 2)
        each(chunk, len(parts))
        return out

    def filter_gradient(self, x, g, dtype, each=helper.in_order):
        (kh, kw), c, o = self.kernel, self.channels, self.out_channels
        parts = _batch_chunks(len(x), self.per_example)
        if self.by_image:
            total = np.zeros((o, c * kh * kw), dtype=dtype)                  # [O, C·KH·KW]

            def product(k):
                cols = _image_windows(x[parts[k]], self.kernel, self.padding)
                rows = g[parts[k]].reshape(len(cols), o, -1)                 # [n, O, OH·OW]
                return np.matmul(rows, cols.transpose(0, 2, 1)).sum(axis=0)
        else:
            total = np.zeros((kh * kw * c, o), dtype=dtype)                  # [KH·KW·C, O]

            def product(k):
                cols = _im2col(x[parts[k]], self.kernel, self.stride, self.padding)
                return cols.T @ _channels_last_rows(g[parts[k]])
        if each is helper.in_order:
            for k in range(len(parts)):
                total += product(k)
        else:   # each chunk's product kept, then added in chunk order, as one thread adds them
            products = [None] * len(parts)
            each(lambda k: products.__setitem__(k, product(k)), len(parts))
            for part in products:
                total += part
        if self.by_image:
            return total.reshape(o, c, kh, kw)
        return np.ascontiguousarray(total.reshape(kh, kw, c, o).transpose(3, 2, 0, 1))


class Conv2dForward(Chunked):
    __slots__ = ("conv",)
    listing_name = "Conv2d.forward"

    def __init__(self, conv: Conv2d):
        super().__init__()
        self.conv = conv

    def __call__(self, x, w):
        return self.conv.forward(x, w, self.each)


class Conv2dFilterGradient(Chunked):
    __slots__ = ("conv", "dtype")
    listing_name = "Conv2d.filter_gradient"

    def __init__(self, conv: Conv2d, dtype):
        super().__init__()
        self.conv, self.dtype = conv, dtype

    def __call__(self, x, g):
        return self.conv.filter_gradient(x, g, self.dtype, self.each)


class GroupedConv2d:
    """The kernels of conv2d, of its filter gradient and of conv2d_transpose with dilation or groups
    (the ordinary convolution keeps `Conv2d` and `_plain_transpose`). Filters [O, C/G, KH, KW] see the
    input's channels in G groups; the windows are gathered as in `_im2col` (KH·KW taps `dilation`
    apart, channels innermost), laid out [G, rows, KH·KW·C/G], and each group is one product of a
    batched matrix product per chunk of the batch."""

    def __init__(self, attrs: dict, x_shape: tuple, kernel: tuple, out_channels: int):
        self.stride, self.padding, self.kernel = attrs["stride"], attrs["padding"], tuple(kernel)
        self.dilation, self.groups = attrs.get("dilation", (1, 1)), attrs.get("groups", 1)
        self.channels, self.out_channels = x_shape[1], out_channels
        self.size = tuple(x_shape[2:])
        self.oh, self.ow = _out_size("conv2d", self.size, self.kernel, self.stride, self.padding, self.dilation)
        self.per_example = self.channels * self.kernel[0] * self.kernel[1] * self.oh * self.ow

    def _cols(self, x):
        """The windows of the NCHW array x as [G, n·OH·OW, KH·KW·C/G]."""
        (kh, kw), (sh, sw), (dh, dw), groups = self.kernel, self.stride, self.dilation, self.groups
        spans = _span(self.kernel, self.dilation)
        windows = sliding_window_view(_nhwc(x, self.padding), spans, axis=(1, 2))[:, ::sh, ::sw, :, ::dh, ::dw]
        n, oh, ow, c = windows.shape[:4]
        cg = c // groups
        cols = np.empty((groups, n, oh, ow, kh, kw, cg), dtype=x.dtype)
        cols[...] = windows.reshape(n, oh, ow, groups, cg, kh, kw).transpose(3, 0, 1, 2, 5, 6, 4)
        return cols.reshape(groups, n * oh * ow, kh * kw * cg)

    def _rows(self, g):
        """The [n, O, OH, OW] array g as each group's rows [G, n·OH·OW, O/G]."""
        n, groups = len(g), self.groups
        og = self.out_channels // groups
        return g.reshape(n, groups, og, self.oh, self.ow).transpose(1, 0, 3, 4, 2).reshape(groups, -1, og)

    def _filters(self, w):
        """Filters [O, C/G, KH, KW] as [G, KH·KW·C/G, O/G], in the order of `_cols`' columns."""
        o, cg, kh, kw = w.shape
        groups = self.groups
        return w.reshape(groups, o // groups, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(groups, -1, o // groups)

    def forward(self, x, w):
        o, oh, ow, groups = self.out_channels, self.oh, self.ow, self.groups
        out = np.empty((len(x), o, oh, ow), dtype=np.result_type(x, w))
        filters = self._filters(w)
        for part in _batch_chunks(len(x), self.per_example):
            product = np.matmul(self._cols(x[part]), filters)                   # [G, n·OH·OW, O/G]
            n = len(product[0]) // (oh * ow)
            out[part].reshape(n, groups, o // groups, oh, ow)[...] = (
                product.reshape(groups, n, oh, ow, o // groups).transpose(1, 0, 4, 2, 3))
        return out

    def filter_gradient(self, x, g, dtype):
        (kh, kw), groups, o = self.kernel, self.groups, self.out_channels
        cg = self.channels // groups
        rows = np.zeros((groups, kh * kw * cg, o // groups), dtype=dtype)
        for part in _batch_chunks(len(x), self.per_example):
            rows += np.matmul(self._cols(x[part]).transpose(0, 2, 1), self._rows(g[part]))
        return np.ascontiguousarray(rows.reshape(groups, kh, kw, cg, o // groups).transpose(0, 4, 3, 1, 2)
                                    .reshape(o, cg, kh, kw))

    def input_gradient(self, g, w, target):
        """conv2d_transpose: as `_plain_transpose`, one product per tap (per group, batched), added where
        the tap's values came from — `dilation` apart."""
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = self.kernel, self.stride, self.dilation, self.padding
        oh, ow, groups, (h, wd), c = self.oh, self.ow, self.groups, self.size, self.channels
        cg = c // groups
        out = np.empty((len(g), c, h, wd), dtype=target)
        taps = [np.ascontiguousarray(w[:, :, i, j].reshape(groups, -1, cg), dtype=target)
                for i in range(kh) for j in range(kw)]                          # [G, O/G, C/G] each
        for part in _batch_chunks(len(g), (self.out_channels + c) * oh * ow):
            rows = self._rows(g[part]).astype(target, copy=False)
            n = rows.shape[1] // (oh * ow)
            product = np.empty((groups, rows.shape[1], cg), dtype=target)
            image = np.zeros((n, h + 2 * ph, wd + 2 * pw, groups, cg), dtype=target)
            for k, filters in enumerate(taps):
                i, j = divmod(k, kw)
                np.matmul(rows, filters, out=product)
                image[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw] += (
                    product.reshape(groups, n, oh, ow, cg).transpose(1, 2, 3, 0, 4))
            out[part] = image[:, ph:ph + h, pw:pw + wd].reshape(n, h, wd, c).transpose(0, 3, 1, 2)
        return out


def _conv2d_kernel(attrs, in_shapes, out_shape, dtype):
    if _is_plain(attrs):
        return Conv2dForward(Conv2d(attrs, in_shapes[0], in_shapes[1][2:], out_shape[1]))
    return GroupedConv2d(attrs, in_shapes[0], in_shapes[1][2:], out_shape[1]).forward


def _vjp_conv2d(e, n, g):
    x, w = n.operands
    conv = _conv_attrs(n.attrs)
    return [lambda: e("conv2d_transpose", g, w, size=tuple(e.shape(x)[2:]), **conv),
            lambda: e("conv2d_filter_grad", x, g, kernel=tuple(e.shape(w)[2:]), **conv)]


define("conv2d", 2, _conv2d_infer, _conv2d_kernel, _vjp_conv2d,
       "2-D cross-correlation of x [N, C, H, W] with filters w [O, C/G, KH, KW] → [N, O, OH, OW] "
       "(attrs: stride, padding — zero padding on each side; dilation — the taps' spacing, and groups G — "
       "output channel o sees input channels of group o // (O/G) only; both absent when 1)", traits=(CONTRACTION,))


def _conv_transpose_infer(shapes, dtypes, attrs):
    g, w = shapes
    dtype = _need_floats("conv2d_transpose", shapes, dtypes)
    _image("conv2d_transpose", g)
    _filters("conv2d_transpose", w)
    dilation, groups = _conv_options("conv2d_transpose", attrs)
    if g[1] != w[0]:
        raise ShapeError(f"conv2d_transpose: the input has {g[1]} channels but the filter {fmt_shape(w)} "
                         f"maps {w[0]} channels")
    _check_groups("conv2d_transpose", groups, g[1], w[1] * groups)
    stride, padding = _window_attrs("conv2d_transpose", attrs)
    size = attrs["size"] = _pair(attrs["size"], "conv2d_transpose size", 1)
    if _out_size("conv2d_transpose", size, w[2:], stride, padding, dilation) != tuple(g[2:]):
        spacing = "" if dilation == (1, 1) else f", dilation {dilation}"
        raise ShapeError(f"conv2d_transpose: a {size[0]}×{size[1]} output does not convolve back to the "
                         f"input's {g[2]}×{g[3]} (filter {w[2]}×{w[3]}, stride {stride}, padding {padding}"
                         f"{spacing})")
    return (g[0], w[1] * groups) + size, dtype


def _conv_transpose_kernel(attrs, in_shapes, out_shape, dtype):
    if not _is_plain(attrs):
        conv, target = GroupedConv2d(attrs, out_shape, in_shapes[1][2:], in_shapes[0][1]), DTYPES[dtype]
        return lambda g, w: conv.input_gradient(g, w, target)
    return _plain_transpose(attrs, in_shapes, out_shape, dtype)


# At stride 1, conv2d_transpose is a convolution of g with the filters flipped: one product of
# gathered windows instead of KH·KW small ones, each added back over the whole image. Measured at
# batch 64, one thread (g [64, O, 14, 14], 5×5 filters): 16 channels out 3.72 → 3.38 ms (the MNIST
# CNN's second layer), 32 out 6.56 → 4.79 ms; 8 out 2.98 → 3.08 ms and 3×3 filters with 16 out
# 1.38 → 1.43 ms lose a little, and 1 channel out (a GEMV per chunk) loses 2.3×. Hence the rule:
# at least BY_CONVOLUTION_MIN filter weights per channel of g (C·KH·KW), and not the image-by-image
# gathering.
BY_CONVOLUTION_MIN = 400


def _plain_transpose(attrs, in_shapes, out_shape, dtype):
    (_, c, kh, kw), (ph, pw) = in_shapes[1], attrs["padding"]
    if attrs["stride"] == (1, 1) and ph < kh and pw < kw and c * kh * kw >= BY_CONVOLUTION_MIN:
        conv = Conv2d({"stride": (1, 1), "padding": (kh - 1 - ph, kw - 1 - pw)}, in_shapes[0], (kh, kw), c)
        if (conv.oh, conv.ow) == tuple(attrs["size"]) and not conv.by_image:
            return Conv2dTransposeByConvolution(conv)
    return Conv2dTranspose(attrs, in_shapes, out_shape, DTYPES[dtype])


class Conv2dTransposeByConvolution(Conv2dForward):
    """conv2d_transpose at stride 1 as `Conv2d.forward` of g, padded by K − 1 − p, with the filters
    flipped in space and their two channel axes swapped (see BY_CONVOLUTION_MIN)."""

    __slots__ = ()
    listing_name = "conv2d_transpose by convolution"

    def __call__(self, g, w):
        return super().__call__(g, np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)))


class Conv2dTranspose(Chunked):
    """conv2d_transpose without dilation or groups. One product per window offset, g's channels-last
    rows [n·OH·OW, O] times that offset's filter slice [O, C], added where the offset's values came
    from in a channels-last image: each product is written into the same buffer, and each addition
    runs over whole rows of the image. (A single product of all offsets at once leaves them
    interleaved in memory, and gathering them back is slower than the products themselves.)"""

    __slots__ = ("stride", "padding", "size", "window", "target", "in_shape", "out_shape")
    listing_name = "conv2d_transpose"

    def __init__(self, attrs: dict, in_shapes, out_shape, target):
        super().__init__()
        self.stride, self.padding, self.size = attrs["stride"], attrs["padding"], attrs["size"]
        self.window, self.target = tuple(in_shapes[1][2:]), target
        self.in_shape, self.out_shape = tuple(in_shapes[0]), tuple(out_shape)

    def __call__(self, g, w):
        (kh, kw), (sh, sw), (ph, pw), size, target = self.window, self.stride, self.padding, self.size, self.target
        _, o, oh, ow = self.in_shape
        c = self.out_shape[1]
        out = np.empty(self.out_shape, dtype=target)
        slices = [np.ascontiguousarray(w[:, :, i, j], dtype=target) for i in range(kh) for j in range(kw)]
        # per example: g's rows and one offset's product
        parts = _batch_chunks(len(g), (o + c) * oh * ow, balanced=True)

        def chunk(index):
            part = parts[index]
            rows = _channels_last_rows(g[part]).astype(target, copy=False)
            n = len(rows) // (oh * ow)
            product = np.empty((len(rows), c), dtype=target)
            image = np.zeros((n, size[0] + 2 * ph, size[1] + 2 * pw, c), dtype=target)
            for k, filters in enumerate(slices):
                i, j = divmod(k, kw)
                np.matmul(rows, filters, out=product)
                image[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += product.reshape(n, oh, ow, c)
            out[part] = image[:, ph:ph + size[0], pw:pw + size[1]].transpose(0, 3, 1, 2)
        self.each(chunk, len(parts))
        return out


def _vjp_conv_transpose(e, n, g):
    y, w = n.operands            # y: conv2d_transpose's own `g`, an [N, O, OH, OW] cotangent of conv2d
    conv = _conv_attrs(n.attrs)
    return [lambda: e("conv2d", g, w, **conv),
            lambda: e("conv2d_filter_grad", g, y, kernel=tuple(e.shape(w)[2:]), **conv)]


define("conv2d_transpose", 2, _conv_transpose_infer, _conv_transpose_kernel, _vjp_conv_transpose,
       "the adjoint of conv2d in its input: g [N, O, OH, OW] and filters w [O, C/G, KH, KW] → [N, C, H, W] "
       "(attrs: stride, padding, size = (H, W), dilation, groups G); a transposed convolution",
       traits=(CONTRACTION,))


def _filter_grad_infer(shapes, dtypes, attrs):
    x, g = shapes
    dtype = _need_floats("conv2d_filter_grad", shapes, dtypes)
    _image("conv2d_filter_grad", x)
    _image("conv2d_filter_grad", g, "cotangent")
    if x[0] != g[0]:
        raise ShapeError(f"conv2d_filter_grad: batch dimensions differ: {fmt_shape(x)} and {fmt_shape(g)}")
    kernel = attrs["kernel"] = _pair(attrs["kernel"], "conv2d_filter_grad kernel", 1)
    dilation, groups = _conv_options("conv2d_filter_grad", attrs)
    _check_groups("conv2d_filter_grad", groups, x[1], g[1])
    stride, padding = _window_attrs("conv2d_filter_grad", attrs)
    if _out_size("conv2d_filter_grad", x[2:], kernel, stride, padding, dilation) != tuple(g[2:]):
        raise ShapeError(f"conv2d_filter_grad: a {kernel[0]}×{kernel[1]} filter over {fmt_shape(x)} does not "
                         f"give {fmt_shape(g)}")
    return (g[1], x[1] // groups) + kernel, dtype


def _filter_grad_kernel(attrs, in_shapes, out_shape, dtype):
    if _is_plain(attrs):
        return Conv2dFilterGradient(Conv2d(attrs, in_shapes[0], attrs["kernel"], out_shape[0]), DTYPES[dtype])
    conv, target = GroupedConv2d(attrs, in_shapes[0], attrs["kernel"], out_shape[0]), DTYPES[dtype]

    def conv2d_filter_grad(x, g):
        return conv.filter_gradient(x, g, target)
    return conv2d_filter_grad


def _vjp_filter_grad(e, n, g):
    x, y = n.operands            # y: conv2d_filter_grad's own `g`, an [N, O, OH, OW] cotangent of conv2d
    conv = _conv_attrs(n.attrs)
    return [lambda: e("conv2d_transpose", y, g, size=tuple(e.shape(x)[2:]), **conv),
            lambda: e("conv2d", x, g, **conv)]


define("conv2d_filter_grad", 2, _filter_grad_infer, _filter_grad_kernel, _vjp_filter_grad,
       "the derivative of conv2d in its filters: x [N, C, H, W] and g [N, O, OH, OW] → [O, C/G, KH, KW] "
       "(attrs: stride, padding, kernel = (KH, KW), dilation, groups G)", traits=(CONTRACTION,))


# ---- windows (pooling) ---------------------------------------------------------------------------

def _patches_infer(shapes, dtypes, attrs):
    (x,) = shapes
    if dtypes[0] not in FLOATS:
        raise ShapeError(f"patches2d needs a float operand, got {fmt_type(x, dtypes[0])}")
    _image("patches2d", x)
    kernel = attrs["kernel"] = _pair(attrs["kernel"], "patches2d window", 1)
    stride, padding = _window_attrs("patches2d", attrs)
    if any(p >= k for p, k in zip(padding, kernel)):
        raise ShapeError(f"patches2d: padding {padding} must be smaller than the window {kernel}")
    attrs["pad_value"] = float(attrs.get("pad_value", 0.0))
    oh, ow = _out_size("patches2d", x[2:], kernel, stride, padding)
    return tuple(x[:2]) + (oh, ow) + kernel, dtypes[0]


def _patches_kernel(attrs, in_shapes, out_shape, dtype):
    stride, padding, kernel, fill = attrs["stride"], attrs["padding"], attrs["kernel"], attrs["pad_value"]
    # a copy, not the strided view: a kernel's result must own its memory (the scheduler may write into it)
    return lambda x: np.ascontiguousarray(_windows(x, kernel, stride, padding, fill))


def _vjp_patches(e, n, g):
    x = n.operands[0]
    return [lambda: e("patches2d_transpose", g, kernel=n.attrs["kernel"], stride=n.attrs["stride"],
                      padding=n.attrs["padding"], size=tuple(e.shape(x)[2:]))]


define("patches2d", 1, _patches_infer, _patches_kernel, _vjp_patches,
       "every window of x [N, C, H, W] on two new axes: [N, C, OH, OW, KH, KW] (attrs: kernel, stride, "
       "padding, pad_value — what padding holds; it gets no gradient)", traits=(MOVES_DATA,))


def _unpatches_infer(shapes, dtypes, attrs):
    (g,) = shapes
    if dtypes[0] not in FLOATS:
        raise ShapeError(f"patches2d_transpose needs a float operand, got {fmt_type(g, dtypes[0])}")
    if len(g) != 6 or not all(isinstance(d, int) for d in g[1:]):
        raise ShapeError(f"patches2d_transpose needs windows [N, C, OH, OW, KH, KW], got {fmt_shape(g)}")
    kernel = attrs["kernel"] = _pair(attrs["kernel"], "patches2d_transpose window", 1)
    stride, padding = _window_attrs("patches2d_transpose", attrs)
    size = attrs["size"] = _pair(attrs["size"], "patches2d_transpose size", 1)
    if tuple(g[4:]) != kernel or _out_size("patches2d_transpose", size, kernel, stride, padding) != tuple(g[2:4]):
        raise ShapeError(f"patches2d_transpose: windows {fmt_shape(g)} do not come from a {size[0]}×{size[1]} "
                         f"image (window {kernel}, stride {stride}, padding {padding})")
    return tuple(g[:2]) + size, dtypes[0]


def _unpatches_kernel(attrs, in_shapes, out_shape, dtype):
    stride, padding, kernel, size = attrs["stride"], attrs["padding"], attrs["kernel"], attrs["size"]
    target = DTYPES[dtype]

    def patches2d_transpose(g):
        return _add_windows(g.transpose(4, 5, 0, 1, 2, 3), size, kernel, stride, padding, target)
    return patches2d_transpose


def _vjp_unpatches(e, n, g):
    return [lambda: e("patches2d", g, kernel=n.attrs["kernel"], stride=n.attrs["stride"],
                      padding=n.attrs["padding"])]


define("patches2d_transpose", 1, _unpatches_infer, _unpatches_kernel, _vjp_unpatches,
       "the adjoint of patches2d: windows [N, C, OH, OW, KH, KW] added back into an [N, C, H, W] image "
       "(attrs: kernel, stride, padding, size = (H, W))", traits=(MOVES_DATA,))


# ---- max pooling ---------------------------------------------------------------------------------
# Max pooling could be reduce_max over patches2d, but a reduction over two tiny trailing axes of a
# strided view is slow in NumPy; these kernels loop over the KH·KW window offsets instead, each step a
# whole-image elementwise operation. A window's gradient goes to its first maximum (row-major order),
# as `maximum` sends a tie's gradient to its first operand; padding holds −inf and never wins.

def _pool_infer(op: str, image_operands: int):
    def infer(shapes, dtypes, attrs):
        _need_floats(op, shapes, dtypes)
        for shape in shapes[:image_operands]:
            _image(op, shape)
        x = shapes[0]
        kernel = attrs["kernel"] = _pair(attrs["kernel"], f"{op} window", 1)
        stride, padding = _window_attrs(op, attrs)
        if any(p >= k for p, k in zip(padding, kernel)):
            raise ShapeError(f"{op}: padding {padding} must be smaller than the window {kernel}")
        pooled = tuple(x[:2]) + _out_size(op, x[2:], kernel, stride, padding)
        if len(shapes) > 1:
            expected = pooled if op == "max_pool2d_grad" else tuple(x)
            if tuple(shapes[1]) != expected:
                raise ShapeError(f"{op}: {fmt_shape(shapes[1])} does not match {fmt_shape(expected)}, the "
                                 f"{'pooled' if op == 'max_pool2d_grad' else 'input'} shape of {fmt_shape(x)}")
        return (tuple(x) if op == "max_pool2d_grad" else pooled), dtypes[0]
    return infer


class MaxPool(Chunked):
    """The kernels of max_pool2d and of its gradient for one input shape and window. When one step
    computes both on the same input, the scheduler runs them as a pair (`keep`): the forward keeps
    which offset of each window held its first maximum, and the gradient writes g there instead of
    finding the maxima again. The forward must run first in each step, as it does in a schedule;
    should it not have, the gradient finds them itself.

    Windows that tile the image exactly (stride = kernel, no padding: the usual 2×2 pooling) are read
    as a reshape of x, and the gradient writes each element once; other windows go through strided
    views of a padded copy, and the gradient adds each window offset's share back. Shared with the
    helper thread (`spread`), each kernel works on the two halves of the batch at once."""

    def __init__(self, attrs: dict, in_shape: tuple, dtype: str, keep: bool = False):
        super().__init__()
        self.kernel, self.stride, self.padding = attrs["kernel"], attrs["stride"], attrs["padding"]
        n, c, h, w = in_shape
        kh, kw = self.kernel
        self.tiles = self.stride == self.kernel and self.padding == (0, 0) and h % kh == 0 and w % kw == 0
        self.in_shape, self.target, self.keep = tuple(in_shape), DTYPES[dtype], keep
        self.out_shape = (n, c) + _out_size("max_pool2d", (h, w), self.kernel, self.stride, self.padding)
        self.index_dtype = np.uint8 if kh * kw <= 256 else np.int32
        self.saved = None

    def _parts(self, n: int) -> list:
        return [slice(0, n)] if self.each is helper.in_order or n < 2 else [slice(0, n // 2), slice(n // 2, n)]

    def _offsets(self, x):
        """For each window offset (i, j) in row-major order, the view of x holding that offset of every
        window, [N, C, OH, OW]."""
        kh, kw = self.kernel
        if self.tiles:
            n, c, h, w = x.shape
            tiled = x.reshape(n, c, h // kh, kh, w // kw, kw)
            return [tiled[:, :, :, i, :, j] for i in range(kh) for j in range(kw)]
        win = _windows(x, self.kernel, self.stride, self.padding, -np.inf)
        return [win[..., i, j] for i in range(kh) for j in range(kw)]

    def _first_maxima(self, x, best, first) -> None:
        """The window maxima of x into `best` and the offset holding each one first into `first`."""
        views = self._offsets(x)
        best[...] = views[0]
        first[...] = 0
        greater, offset = np.empty(best.shape, bool), np.empty_like(first)
        for k, view in enumerate(views[1:], 1):
            np.greater(view, best, out=greater)   # strictly: a tie keeps the earlier offset
            # first = k where greater: k exceeds every offset before it, so a maximum does it (a
            # masked copy is twenty times slower)
            np.multiply(greater, first.dtype.type(k), out=offset)
            np.maximum(first, offset, out=first)
            np.maximum(best, view, out=best)

    def maxima(self, x):
        """(the window maxima, the offset holding each first), the batch's parts computed by `each`."""
        best = np.empty((len(x),) + self.out_shape[1:], dtype=x.dtype)
        first = np.empty(best.shape, self.index_dtype)
        parts = self._parts(len(x))
        self.each(lambda k: self._first_maxima(x[parts[k]], best[parts[k]], first[parts[k]]), len(parts))
        return best, first

    def forward(self, x):
        if self.keep:
            best, self.saved = self.maxima(x)
            return best
        best = np.empty((len(x),) + self.out_shape[1:], dtype=x.dtype)
        parts = self._parts(len(x))

        def part(k):
            views, out = self._offsets(x[parts[k]]), best[parts[k]]
            out[...] = views[0]
            for view in views[1:]:
                np.maximum(out, view, out=out)
        self.each(part, len(parts))
        return best

    def gradient(self, x, g):
        if self.saved is None:
            _, first = self.maxima(x)
        else:
            first, self.saved = self.saved, None
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        n, c, oh, ow = g.shape
        h, w = self.in_shape[2:]
        if self.tiles:   # every element of x is in exactly one window: each is written once
            out = np.empty((n,) + self.in_shape[1:], dtype=self.target)
        else:
            out = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=self.target)
        parts = self._parts(n)

        def part(index):
            into, hits, grads = out[parts[index]], first[parts[index]], g[parts[index]]
            hit = np.empty(hits.shape, bool)
            if self.tiles:
                for k, view in enumerate(self._offsets(into)):
                    np.equal(hits, k, out=hit)
                    np.multiply(grads, hit, out=view)
                return
            for k in range(kh * kw):
                i, j = divmod(k, kw)
                np.equal(hits, k, out=hit)
                into[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += grads * hit
        self.each(part, len(parts))
        return out[:, :, ph:ph + h, pw:pw + w] if ph or pw else out


def _max_pool_kernel(attrs, in_shapes, out_shape, dtype):
    return MaxPool(attrs, in_shapes[0], dtype).forward


def _max_pool_grad_kernel(attrs, in_shapes, out_shape, dtype):
    return MaxPool(attrs, in_shapes[0], dtype).gradient


def _max_pool_select_kernel(attrs, in_shapes, out_shape, dtype):
    pool = MaxPool(attrs, in_shapes[0], dtype)

    def max_pool2d_select(x, u):
        _, first = pool.maxima(x)
        win = _windows(u, pool.kernel, pool.stride, pool.padding)
        (kh, kw), out = pool.kernel, np.zeros(out_shape, dtype=u.dtype)
        for k in range(kh * kw):
            np.copyto(out, win[..., k // kw, k % kw], where=first == k)
        return out
    return max_pool2d_select


def _pool_attrs(n):
    return {"kernel": n.attrs["kernel"], "stride": n.attrs["stride"], "padding": n.attrs["padding"]}


define("max_pool2d", 1, _pool_infer("max_pool2d", 1), _max_pool_kernel,
       lambda e, n, g: [lambda: e("max_pool2d_grad", n.operands[0], g, **_pool_attrs(n))],
       "the largest value of each window of x [N, C, H, W] → [N, C, OH, OW] (attrs: kernel, stride, padding "
       "— padding never wins)", traits=(REDUCTION,))
define("max_pool2d_grad", 2, _pool_infer("max_pool2d_grad", 1), _max_pool_grad_kernel,
       lambda e, n, g: [None, lambda: e("max_pool2d_select", n.operands[0], g, **_pool_attrs(n))],
       "the VJP of max_pool2d: g [N, C, OH, OW] sent to the first maximum of each window of x [N, C, H, W] "
       "(no gradient to x: the routing is piecewise constant)")
define("max_pool2d_select", 2, _pool_infer("max_pool2d_select", 2), _max_pool_select_kernel,
       lambda e, n, g: [None, lambda: e("max_pool2d_grad", n.operands[0], g, **_pool_attrs(n))],
       "u [N, C, H, W] read at the first maximum of each window of x: the adjoint of max_pool2d_grad in g")


# ---- gather --------------------------------------------------------------------------------------

def _take_infer(shapes, dtypes, attrs):
    x, idx = shapes
    if dtypes[1] not in INTS:
        raise ShapeError(f"take needs integer indices, got {fmt_type(idx, dtypes[1])}")
    if not x:
        raise ShapeError("take needs a tensor of rank ≥ 1 to take from, got a scalar")
    axis = attrs["axis"] = normalize_axes(attrs.get("axis", 0), len(x))[0]
    return tuple(x[:axis]) + tuple(idx) + tuple(x[axis + 1:]), dtypes[0]


def _take_kernel(attrs, in_shapes, out_shape, dtype):
    axis = attrs["axis"]
    return lambda x, idx: np.take(x, idx, axis=axis)


def _vjp_take(e, n, g):
    x, idx = n.operands
    return [lambda: e("scatter_add", g, idx, axis=n.attrs["axis"], shape=e.shape(x)), None]


define("take", 2, _take_infer, _take_kernel, _vjp_take,
       "x's slices along attrs.axis at integer indices: shape x[:axis] + indices + x[axis+1:] "
       "(an embedding lookup with axis 0); indices get no gradient",
       index=IndexOperand(1, lambda attrs, shapes: shapes[0][attrs["axis"]]), traits=(MOVES_DATA,))


def _scatter_infer(shapes, dtypes, attrs):
    g, idx = shapes
    if dtypes[1] not in INTS:
        raise ShapeError(f"scatter_add needs integer indices, got {fmt_type(idx, dtypes[1])}")
    target = attrs["shape"] = tuple(attrs["shape"])
    if not target:
        raise ShapeError("scatter_add needs a target of rank ≥ 1")
    axis = attrs["axis"] = normalize_axes(attrs.get("axis", 0), len(target))[0]
    expected = target[:axis] + tuple(idx) + target[axis + 1:]
    if tuple(g) != expected:
        raise ShapeError(f"scatter_add: updates {fmt_shape(g)} do not fit indices {fmt_shape(idx)} into "
                         f"{fmt_shape(target)} along axis {axis} (expected {fmt_shape(expected)})")
    return target, dtypes[0]


def _scatter_kernel(attrs, in_shapes, out_shape, dtype):
    axis, target = attrs["axis"], DTYPES[dtype]
    rank = len(in_shapes[1])
    moved_from = list(range(axis, axis + rank))

    def scatter_add(g, idx):
        out = np.zeros(out_shape, dtype=target)
        updates = np.moveaxis(g, moved_from, list(range(rank))) if axis else g
        rows = np.moveaxis(out, axis, 0) if axis else out
        flat = idx.reshape(-1)
        if flat.size == 0:
            return out
        # The updates of each index grouped by a sort and summed in one pass (np.add.reduceat): the
        # sums np.add.at makes, to rounding, in about a seventh of its time.
        order = np.argsort(flat, kind="stable")
        ordered = flat[order]
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        grouped = updates.reshape((flat.size,) + rows.shape[1:])[order]
        rows[ordered[starts]] = np.add.reduceat(grouped, starts, axis=0)
        return out
    return scatter_add


define("scatter_add", 2, _scatter_infer, _scatter_kernel,
       lambda e, n, g: [lambda: e("take", g, n.operands[1], axis=n.attrs["axis"]), None],
       "zeros of attrs.shape with the updates added at the indices along attrs.axis (repeated indices "
       "accumulate): the adjoint of take", shape_attrs=("shape",),
       index=IndexOperand(1, lambda attrs, shapes: attrs["shape"][attrs["axis"]]))


# ---- joining -------------------------------------------------------------------------------------

def _concat_infer(shapes, dtypes, attrs):
    if not shapes:
        raise ShapeError("concat needs at least one operand")
    if len(set(dtypes)) > 1:
        raise ShapeError("concat: operand types differ: " + ", ".join(fmt_type(s, d) for s, d in zip(shapes, dtypes)))
    rank = len(shapes[0])
    if rank == 0 or any(len(s) != rank for s in shapes):
        raise ShapeError("concat needs operands of one rank ≥ 1, got " + ", ".join(fmt_shape(s) for s in shapes))
    axis = attrs["axis"] = normalize_axes(attrs.get("axis", 0), rank)[0]
    for s in shapes:
        if not isinstance(s[axis], int):
            raise ShapeError(f"concat: axis {axis} must have a known size in every operand, got {fmt_shape(s)}")
        if any(a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis):
            raise ShapeError(f"concat: shapes {fmt_shape(shapes[0])} and {fmt_shape(s)} differ off axis {axis}")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return tuple(out), dtypes[0]


def _concat_kernel(attrs, in_shapes, out_shape, dtype):
    axis = attrs["axis"]
    return lambda *xs: np.concatenate(xs, axis=axis)


def _vjp_concat(e, n, g):
    axis = n.attrs["axis"]
    full = ("s", None, None, None)

    def part(start, stop):
        return lambda: e("slice", g, index=(full,) * axis + (("s", start, stop, None),))
    rules, start = [], 0
    for operand in n.operands:
        stop = start + e.shape(operand)[axis]
        rules.append(part(start, stop))
        start = stop
    return rules


define("concat", None, _concat_infer, _concat_kernel, _vjp_concat,
       "the operands joined along attrs.axis (their other dimensions agree)", traits=(MOVES_DATA,))


# ---- masks ---------------------------------------------------------------------------------------
# The causal mask of attention when a length is symbolic (`causal_mask` of known sizes is a constant
# the builtin makes itself): queries [Tq] aligned to the last Tq of the keys [Tk], as in incremental
# decoding, so query i sees keys 0 … Tk − Tq + i. There can be no more queries than keys; with
# symbolic lengths that is known only once they are bound, and the kernel factory refuses it then.

def more_queries(queries, keys) -> str:
    return (f"causal_mask: {queries} queries but only {keys} keys; the queries are the last positions of "
            "the keys' sequence, so there can be no more of them than keys")


def causal_mask_array(queries: int, keys: int) -> np.ndarray:
    """[queries, keys] booleans, true where key j ≤ query i + keys − queries (one array, no temporaries
    of that size)."""
    return np.arange(keys) <= np.arange(queries)[:, None] + (keys - queries)


def _causal_infer(shapes, dtypes, attrs):
    shape = attrs["shape"] = tuple(attrs["shape"])
    if len(shape) != 2 or not all(isinstance(d, str) or isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                  for d in shape):
        raise ShapeError(f"causal_mask needs a shape [queries, keys] of positive sizes, got {shape!r}")
    if all(isinstance(d, int) for d in shape) and shape[0] > shape[1]:
        raise ShapeError(more_queries(*shape))
    return shape, "bool"


def _causal_kernel(attrs, in_shapes, out_shape, dtype):
    queries, keys = out_shape
    if queries > keys:
        raise ShapeError(more_queries(queries, keys))
    return lambda: causal_mask_array(queries, keys)


define("causal_mask", 0, _causal_infer, _causal_kernel, None,
       "booleans [Tq, Tk] (attrs.shape, symbolic sizes allowed), true where key j ≤ query i + Tk − Tq: "
       "attention's causal mask with the queries aligned to the last keys (Tq ≤ Tk)",
       shape_attrs=("shape",), traits=(MOVES_DATA,))


# ---- noise ---------------------------------------------------------------------------------------

def _noise_infer(name: str):
    """The shape rule of a noise op: floats of attrs.shape (dimensions, symbolic or ≥ 0)."""
    def infer(shapes, dtypes, attrs):
        shape = attrs["shape"] = tuple(attrs["shape"])
        if attrs["dtype"] not in FLOATS:
            raise ShapeError(f"{name} makes floats, not {attrs['dtype']}")
        if not all(isinstance(d, str) or isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ShapeError(f"{name} needs a shape of dimensions, got {shape!r}")
        return shape, attrs["dtype"]
    return infer


def _noise_kernel(draw: str):
    """A kernel drawing `rng.<draw>` (standard_normal, random) of the result's shape, every run."""
    def kernel(attrs, in_shapes, out_shape, dtype, context):
        rng, target = context.rng, DTYPES[dtype]   # (no generator where a schedule is only costed, not run)
        return lambda: getattr(rng, draw)(out_shape, dtype=target)
    return kernel


define("random_normal", 0, _noise_infer("random_normal"), _noise_kernel("standard_normal"), None,
       "standard normal noise of attrs.shape, drawn anew every run from the run's generator (a generator's "
       "input; attrs.key keeps draws apart)", shape_attrs=("shape",), random=True)


define("random_uniform", 0, _noise_infer("random_uniform"), _noise_kernel("random"), None,
       "uniform noise in [0, 1) of attrs.shape, drawn anew every run from the run's generator (`u < p` is a "
       "Bernoulli(p) draw; attrs.key keeps draws apart)", shape_attrs=("shape",), random=True)
