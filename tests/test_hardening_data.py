"""Hostile and damaged data end in a located error: never a silently changed value, an internal error,
an unbounded allocation or a hang. Cases that could take the machine down if they regressed (endless
files, huge settings) run `gradlang` in a child process with bounded memory and time."""
from __future__ import annotations

import gzip
import inspect
import io
import os
import resource
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_data import server  # noqa: F401  (a fixture: an HTTP server on 127.0.0.1 serving a folder)

import gradlang
from gradlang import GradError
from gradlang.cli import main
from gradlang.runtime import data as data_sources
from gradlang.runtime import fetch as fetch_module
from gradlang.runtime.data import DataContext, two_moons
from gradlang.runtime.formats import read_csv, read_idx, read_npz

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = """input x : f32[B, 2]
input y : i32[B]
param w : [2, 3] = 0.1
loss = mean(cross_entropy(x @ w, y))
train {
  data = d
  optimizer = sgd(lr: 0.1)
  steps = 2
}
"""


def program(folder: Path, source: str) -> Path:
    """A classifier reading `data d = <source>` on line 1, written to folder/m.grad."""
    path = folder / "m.grad"
    path.write_text(f"data d = {source}\n{CLASSIFIER}")
    return path


def run_bounded(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`gradlang ARGS` in a child process limited to 4 GB of address space and a minute."""
    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    return subprocess.run([sys.executable, "-m", "gradlang.cli", *args], cwd=folder, capture_output=True, text=True,
                          timeout=60, preexec_fn=limit_memory, env={**os.environ, "PYTHONPATH": str(ROOT)})


def assert_located_error(code: int, err: str, *expected: str) -> None:
    assert code == 1, err
    assert "internal error" not in err and "Traceback" not in err and "warning" not in err, err
    for text in expected:
        assert text in err, err


# ---- 1. CSV values are checked where they enter ----------------------------------------------------

@pytest.mark.parametrize("value, why", [
    ("1e20", "too large to be read exactly as an integer"),
    ("18446744073709551616", "too large to be read exactly as an integer"),
    ("inf", "not a finite number: NaN and infinity are not allowed in data"),
    ("-Infinity", "not a finite number: NaN and infinity are not allowed in data"),
    ("nan", "not a finite number: NaN and infinity are not allowed in data"),
])
def test_a_csv_label_that_is_not_a_finite_exact_integer_is_named_as_written(tmp_path, value, why):
    (tmp_path / "d.csv").write_text(f"a,b,y\n1,2,0\n\n3,4,{value}\n5,6,1\n")
    with pytest.raises(GradError) as info:
        read_csv(tmp_path / "d.csv", target="y")
    assert f"d.csv:4: field 'y' is '{value}', {why}" in info.value.message


@pytest.mark.parametrize("value, why", [
    ("nan", "not a finite number: NaN and infinity are not allowed in data"),
    ("-inf", "not a finite number"),
    ("1e39", "too large for a 32-bit float"),
    ("1e400", "too large for a 32-bit float"),
])
def test_a_csv_feature_that_is_not_finite_or_overflows_float32_is_named(tmp_path, value, why):
    (tmp_path / "d.csv").write_text(f"1,2,0\n3,{value},1\n")
    with pytest.raises(GradError) as info:
        read_csv(tmp_path / "d.csv", header=False)
    assert f"d.csv:2: field 'column 2' is '{value}', {why}" in info.value.message


def test_csv_values_up_to_the_limits_are_read_unchanged_and_past_them_refused(tmp_path):
    (tmp_path / "d.csv").write_text("a,y\n3e38,9007199254740991\n-1.5,-3\n")
    out = read_csv(tmp_path / "d.csv", target="y")
    assert out["y"].dtype == np.int64 and out["y"].tolist() == [2 ** 53 - 1, -3]
    assert out["x"][:, 0].tolist() == [3e38, -1.5]
    (tmp_path / "d.csv").write_text("a,y\n3e38,9007199254740993\n")   # read as a float, it would be 2**53
    with pytest.raises(GradError, match="d.csv:2: field 'y' is '9007199254740993', too large to be read exactly"):
        read_csv(tmp_path / "d.csv", target="y")


def test_gradlang_run_on_a_csv_label_of_1e20_is_an_error_at_the_data_and_the_row(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,4,1e20\n")
    path = program(tmp_path, 'csv(path: "t.csv", target: "y")')
    code = main(["run", str(path), "--quiet", "--out", str(tmp_path / "p.npz")])
    assert_located_error(code, capsys.readouterr().err, "m.grad:1:10: error:", "t.csv:3: field 'y' is '1e20'")
    assert not (tmp_path / "p.npz").exists()


# ---- 2. sizes read from files are checked before anything is allocated ------------------------------

@pytest.mark.parametrize("source", ['csv(path: "/dev/zero")', 'idx(x: "/dev/zero")', 'npz(path: "/dev/zero")',
                                    'csv(path: "pipe")', 'idx(x: "pipe")', 'csv(path: ".")'])
def test_a_device_pipe_or_folder_is_refused_not_read(tmp_path, source):
    if "/dev/zero" in source and not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    os.mkfifo(tmp_path / "pipe")   # no writer: opening it must not wait for one
    program(tmp_path, source)
    run = run_bounded(tmp_path, "run", "m.grad", "--quiet")
    assert_located_error(run.returncode, run.stderr, "m.grad:1:10: error:", "not a regular file but a")


def test_a_data_file_larger_than_the_memory_limit_is_refused(tmp_path, monkeypatch):
    (tmp_path / "d.csv").write_text("a,y\n" + "1,0\n" * 1000)
    monkeypatch.setenv("GRADLANG_MAX_BYTES", "1000")
    with pytest.raises(GradError, match="d.csv: reading the file would need 4,004 bytes, more than the limit of "
                                        "1,000 bytes"):
        read_csv(tmp_path / "d.csv")


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.mark.parametrize("data, message", [
    (bytes([0, 0, 8, 255]) + bytes(1020), "the IDX header declares 255 dimensions; at most 32 are supported"),
    (bytes([0, 0, 8, 4]) + struct.pack(">4I", *[65536] * 4),   # 2**64 values: wraps to 0 in int64
     "IDX header declares shape (65536, 65536, 65536, 65536) (18446744073709551636 bytes) but the file has 20 bytes"),
    (bytes([0, 0, 8, 3]) + struct.pack(">3I", *[0xFFFFFFFF] * 3) + bytes(8),   # (2**32 - 1)**3 values, exactly
     "IDX header declares shape (4294967295, 4294967295, 4294967295) (79228162458924105385300197391 bytes) but "
     "the file has 24 bytes"),
    (gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 10 ** 7) + bytes(10 ** 7)),
     "the IDX data of shape (10000000,) would need 10,000,000 bytes, more than the limit of 1,000,000 bytes"),
    (gzip.compress(idx_bytes(np.ones(6, np.uint8)) + b"extra"), "declares shape (6,) (14 bytes) but the file has more"),
])
def test_an_idx_header_is_checked_against_the_file_and_the_limit_before_reading(tmp_path, monkeypatch, data, message):
    monkeypatch.setenv("GRADLANG_MAX_BYTES", "1000000")
    (tmp_path / "x.idx").write_bytes(data)
    with pytest.raises(GradError) as info:
        read_idx(tmp_path / "x.idx")
    assert str(tmp_path / "x.idx") in info.value.message and message in info.value.message


def test_corrupt_gzip_idx_data_is_named_not_an_internal_error(tmp_path):
    packed = bytearray(gzip.compress(idx_bytes(np.arange(240, dtype=np.uint8).reshape(4, 60)) * 3))
    flipped = bytearray(packed)
    for i in range(12, len(flipped) - 8, 3):   # the middle of the deflate stream
        flipped[i] ^= 0x5A
    bad_crc = bytearray(gzip.compress(idx_bytes(np.ones((4, 2), np.uint8))))
    bad_crc[-8] ^= 1
    for damaged in (flipped, bad_crc):
        (tmp_path / "x.idx").write_bytes(bytes(damaged))
        with pytest.raises(GradError, match="x.idx: corrupt gzip data"):
            read_idx(tmp_path / "x.idx")


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def npy_header(shape: tuple, descr: str = "<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def write_npz(path: Path, members: dict, method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def unsupported_method(path: Path) -> Path:
    """An NPZ whose members claim a compression method (99) that zipfile cannot read."""
    write_npz(path, {"x.npy": npy(np.ones((4, 2)))}, zipfile.ZIP_BZIP2)
    path.write_bytes(path.read_bytes().replace(b"\x0c\x00", b"\x63\x00"))   # method 12 (bzip2) in both headers
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: write_npz(p, {"x.npy": npy_header((10 ** 12,))}),
     "field 'x': its array of shape (1000000000000,) would need 8,000,000,000,000 bytes, more than the limit"),
    (lambda p: write_npz(p, {"x.npy": npy_header((4, 2))}),
     "field 'x' is damaged (its header declares shape (4, 2) of float64, 64 bytes, but the member holds 0)"),
    (unsupported_method, "field 'x' is stored with zip compression method 99, which cannot be read"),
    (lambda p: write_npz(p, {"x.npy": npy(np.array(["a", "b"]))}), "field 'x' holds strings (<U1)"),
    (lambda p: write_npz(p, {"x.npy": npy(np.array([b"a"]))}), "field 'x' holds bytes"),
    (lambda p: write_npz(p, {"x.npy": npy(np.zeros(2, dtype=[("a", "<f8")]))}), "field 'x' holds raw or structured"),
    (lambda p: write_npz(p, {"x.npy": npy(np.ones(2) + 1j)}), "field 'x' holds complex numbers"),
])
def test_an_npz_field_is_checked_before_it_is_allocated(tmp_path, monkeypatch, make, message):
    monkeypatch.setenv("GRADLANG_MAX_BYTES", str(10 ** 9))
    path = make(tmp_path / "d.npz")
    with pytest.raises(GradError) as info:
        read_npz(path)
    assert info.value.message.startswith(f"cannot load {path}: ") and message in info.value.message


def test_a_single_value_feeding_a_scalar_input_names_the_file_and_field(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2), np.float32), s=np.array(3.0))
    source = ('data d = npz(path: "d.npz")\ninput x : f32[B, 2]\ninput s : f32[]\nparam w : [2] = 0.1\n'
              "loss = mean(x @ w) * s\ntrain {\n  data = d\n  steps = 1\n}\n")
    (tmp_path / "m.grad").write_text(source)
    prog = gradlang.compile(tmp_path / "m.grad")
    with pytest.raises(GradError) as info:
        prog.train()
    assert f"field 's' of {tmp_path / 'd.npz'} is a single value" in info.value.message
    assert "declare it f32[B]" in info.value.message and info.value.span.line == 3
    with pytest.raises(GradError, match="data field 's' is a single value"):   # data passed from Python
        prog.train({"x": np.ones((4, 2), np.float32), "s": np.array(3.0)})


def test_nan_in_a_data_file_is_named_with_the_field_and_example(tmp_path):
    x = np.ones((4, 2))
    x[2, 1] = np.inf
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 0], np.int32))
    prog = gradlang.compile(program(tmp_path, 'npz(path: "d.npz")'))
    with pytest.raises(GradError, match=r"d.npz: field 'x', example 2 \(counting from 0\) holds inf: NaN and "
                                        "infinity are not allowed in data"):
        prog.load_data()


def test_idx_labels_must_be_integers(tmp_path):
    (tmp_path / "x.idx").write_bytes(idx_bytes(np.ones((3, 2), np.uint8)))
    (tmp_path / "y.idx").write_bytes(idx_bytes(np.array([0.0, np.nan, 1.0], ">f8"), 0x0E))
    prog = gradlang.compile(program(tmp_path, 'idx(x: "x.idx", y: "y.idx")'))
    with pytest.raises(GradError, match="y.idx: the labels .y. must be integers, but this IDX file holds float64"):
        prog.load_data()


def test_a_download_longer_than_the_file_is_stopped(server, tmp_path, monkeypatch):  # noqa: F811
    root, url = server
    (root / "a.bin").write_bytes(b"x" * 5000)
    spec = {"url": url, "files": {"a.bin": "0" * 64}, "bytes": {"a.bin": 100}}
    monkeypatch.setitem(fetch_module.DATASETS, "fake", spec)
    with pytest.raises(GradError, match="a.bin: the download is longer than the file's 100 bytes"):
        fetch_module.fetch("fake", tmp_path / "data", url=url, log=lambda _: None)
    assert not list((tmp_path / "data" / "fake").iterdir())


# ---- 3. data-source settings are checked before any work, at the setting ---------------------------

@pytest.mark.parametrize("source, setting, message", [
    ("two_moons(n: -1)", "n: -1", "two_moons(n: -1): n must be ≥ 1"),
    ("two_moons(noise: 0.1, n: 10**12)", "n: 10**12", "two_moons(n: 1000000000000) would need 24,000,000,000,000 "
                                                      "bytes, more than the limit"),
    ("spirals(classes: 0)", "classes: 0", "spirals(classes: 0): classes must be ≥ 1"),
    ("spirals(n: 10, classes: 11)", "classes: 11", "spirals(classes: 11): classes must be ≤ n (10)"),
    ("line(noise: -1.0)", "noise: -1.0", "line(noise: -1.0): noise must be ≥ 0"),
    ("line(slope: 1e308 * 10)", "slope: 1e308 * 10", "line(slope: inf): slope must be a finite number"),
    ("line(low: 2.0, high: 1.0)", "low: 2.0", "line(low: 2.0): low must be ≤ high (1.0)"),
    ("blobs(centers: 0)", "centers: 0", "blobs(centers: 0): centers must be ≥ 1"),
    ("blobs(dim: 10**6, centers: 10**6)", "centers: 10**6", "blobs(n: 300, centers: 1000000, dim: 1000000) would need"),
    ("xor(seed: -1)", "seed: -1", "xor(seed: -1): seed must be ≥ 0"),
    ("gaussian_ring(radius: 0.0)", "radius: 0.0", "gaussian_ring(radius: 0.0): radius must be > 0"),
    ('mnist(split: "val")', 'split: "val"', 'mnist(split: "val"): split must be "train" or "test"'),
    ("mnist(limit: -5)", "limit: -5", "mnist(limit: -5): limit must be ≥ 0"),
    ("digit_sequences(n: 10**6, length: 10**6)", "n: 10**6", "digit_sequences(n: 1000000, length: 1000000) would"),
    ("text_chars(valid_fraction: 1.0)", "valid_fraction: 1.0", "valid_fraction must be < 1"),
    ('idx(x: "x.idx", normalize: 0.0)', "normalize: 0.0", "idx(normalize: 0.0): normalize must be > 0"),
    ("skipgrams(negatives: 10**9)", "negatives: 10**9", "skipgrams(negatives: 1000000000): negatives must be ≤ "
                                                         "vocab_size (4000)"),
])
def test_a_data_setting_out_of_range_is_an_error_at_the_setting(tmp_path, source, setting, message):
    path = program(tmp_path, source)
    with pytest.raises(GradError) as info:   # when compiled, or (a check that needs the text) when loaded
        gradlang.compile(path).load_data()
    assert message in info.value.message
    column = path.read_text().index(setting) + 1
    assert (info.value.span.line, info.value.span.col) == (1, column)


def test_a_setting_on_a_later_line_of_the_call_is_pointed_at(tmp_path):
    path = tmp_path / "m.grad"
    path.write_text("data d = line(\n  n: 10,\n  noise: -1.0)\n" + CLASSIFIER)
    with pytest.raises(GradError) as info:
        gradlang.compile(path).load_data()
    assert (info.value.span.line, info.value.span.col) == (3, 3)


def test_a_skipgram_window_wider_than_the_text_is_refused_without_looping(tmp_path):
    (tmp_path / "t.txt").write_text("to be or not to be that is the question\n")
    program(tmp_path, 'skipgrams(file: "t.txt", window: 10**9, subsample: 0.0)')
    run = run_bounded(tmp_path, "run", "m.grad", "--quiet")
    assert_located_error(run.returncode, run.stderr, "m.grad:1:35: error: skipgrams(window: 1000000000): the "
                                                     "window must be narrower than the text, which has 10 words")


def test_skipgram_negatives_within_the_vocabulary_but_beyond_memory_are_refused(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text("to be or not to be that is the question\n" * 10)
    monkeypatch.setenv("GRADLANG_MAX_BYTES", str(10 ** 6))
    prog = gradlang.compile(program(tmp_path, 'skipgrams(file: "t.txt", vocab_size: 10**6, negatives: 10**5)'))
    with pytest.raises(GradError, match=r"skipgrams\(window: 3, negatives: 100000\) on .*t.txt, [\d,]+ pairs, would "
                                        "need"):
        prog.load_data()


def test_every_numeric_setting_of_every_data_source_has_a_declared_range():
    for name, source in data_sources.DATA_SOURCES.items():
        for param in list(inspect.signature(source).parameters.values())[1:]:
            # (csv's target, an index or a column name, is checked against the file's columns by read_csv)
            if type(param.default) in (int, float) and "str" not in param.annotation:
                with pytest.raises(GradError, match="must be"):
                    data_sources.check_settings(name, {param.name: float("nan")})


def test_a_source_called_from_python_checks_its_settings_too():
    with pytest.raises(GradError, match=r"two_moons\(n: 0\): n must be ≥ 1"):
        two_moons(DataContext(Path("."), None), n=0)
