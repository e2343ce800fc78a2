"""Data sources and file formats: synthetic sets, CSV, IDX, NPZ, MNIST, and `fetch` from a local server."""
import functools
import gzip
import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from shared_data import SHARED_DATA, needs_mnist

import gradlang
from gradlang import GradError
from gradlang.runtime import fetch as fetch_module
from gradlang.runtime.data import DataContext, blobs, line, mnist, spirals, two_moons, xor
from gradlang.runtime.formats import read_csv, read_idx

CTX = DataContext(Path("."), None)


def test_synthetic_sets_have_the_documented_fields_and_are_seeded():
    moons = two_moons(CTX, n=101, noise=0.1, seed=3)
    assert moons["x"].shape == (101, 2) and set(np.unique(moons["y"])) == {-1.0, 1.0}
    np.testing.assert_array_equal(moons["x"], two_moons(CTX, n=101, noise=0.1, seed=3)["x"])
    assert not np.array_equal(moons["x"], two_moons(CTX, n=101, noise=0.1, seed=4)["x"])
    pts = line(CTX, n=50, slope=2.0, intercept=1.0, noise=0.0)
    np.testing.assert_allclose(pts["y"], 1.0 + 2.0 * pts["x"])
    table = xor(CTX)
    np.testing.assert_array_equal(table["y"], [0, 1, 1, 0])
    spiral = spirals(CTX, n=90, classes=3)
    assert spiral["x"].shape == (90, 2) and np.bincount(spiral["y"]).tolist() == [30, 30, 30]
    cluster = blobs(CTX, n=40, centers=4, dim=3)
    assert cluster["x"].shape == (40, 3) and cluster["y"].max() < 4


def test_csv_reads_features_and_integer_targets(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,4.5,1\n\n5,6,1\n")
    out = read_csv(tmp_path / "d.csv", target="label")
    np.testing.assert_array_equal(out["x"], [[1, 2], [3, 4.5], [5, 6]])
    assert out["y"].dtype == np.int64 and out["y"].tolist() == [0, 1, 1]


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,2\n3\n", "d.csv:3: expected 2 fields, found 1"),
    ("a,b\n1,2\n3,x\n", "d.csv:3: field 'b' is not a number: 'x'"),
    ("a,b\n", "no data rows"),
])
def test_malformed_csv_names_the_row_and_field(tmp_path, text, message):
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(GradError, match=message):
        read_csv(tmp_path / "d.csv")


def write_idx(path, array, code=0x08, compress=False):
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.idx", images, compress=compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.idx"), images)
    floats = np.linspace(0, 1, 6).reshape(2, 3)
    write_idx(tmp_path / "f.idx", floats, code=0x0E)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), floats)


@pytest.mark.parametrize("data, message", [
    (b"\x01\x00\x08\x01", "bad magic number"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX element type 0x07"),
    (b"\x00\x00\x08\x02\x00\x00", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "declares shape (3,) (11 bytes) but the file has 10 bytes"),
    (b"\x1f\x8bnot gzip", "corrupt gzip data"),
])
def test_malformed_idx_is_explained(tmp_path, data, message):
    (tmp_path / "bad.idx").write_bytes(data)
    with pytest.raises(GradError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_idx(tmp_path / "bad.idx")


def test_npz_source_refuses_pickles(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "ok.npz", x=np.ones((3, 2)), y=np.zeros(3))
    import zipfile
    with zipfile.ZipFile(tmp_path / "evil.npz", "w") as z:
        z.write(tmp_path / "obj.npy", "x.npy")
    source = "data d = npz(path: \"{}\")\ninput x : f32[B, 2]\nloss = sum(x)\ntrain {{ data = d }}\n"
    ok = gradlang.compile(source.format(tmp_path / "ok.npz"))
    assert ok.load_data()["x"].shape == (3, 2)
    with pytest.raises(GradError, match="cannot load"):
        gradlang.compile(source.format(tmp_path / "evil.npz")).load_data()


@needs_mnist
def test_real_mnist_test_split_matches_its_readme():
    out = mnist(DataContext(Path("."), None, SHARED_DATA), split="test")
    assert out["x"].shape == (10000, 784) and out["x"].dtype == np.float32
    assert 0.0 <= out["x"].min() and out["x"].max() == 1.0
    assert out["y"][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(out["y"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    square = mnist(DataContext(Path("."), None, SHARED_DATA), split="test", flatten=False, limit=5)
    assert square["x"].shape == (5, 1, 28, 28)


def test_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(GradError, match="gradlang data fetch mnist"):
        mnist(DataContext(Path("."), None, tmp_path))


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving a folder; stops by itself after the test."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def fake_dataset(monkeypatch, root: Path) -> dict:
    files = {"a.bin": b"alpha" * 100, "b.bin": b"beta" * 50}
    for name, content in files.items():
        (root / name).write_bytes(content)
    spec = {"url": "http://unused.invalid/", "files": {n: hashlib.sha256(c).hexdigest() for n, c in files.items()}}
    monkeypatch.setitem(fetch_module.DATASETS, "fake", spec)
    return files


def test_fetch_downloads_and_verifies_checksums(server, tmp_path, monkeypatch):
    root, url = server
    files = fake_dataset(monkeypatch, root)
    lines = []
    paths = fetch_module.fetch("fake", tmp_path / "data", url=url, log=lines.append)
    assert [p.name for p in paths] == list(files)
    assert (tmp_path / "data" / "fake" / "a.bin").read_bytes() == files["a.bin"]
    again = []
    fetch_module.fetch("fake", tmp_path / "data", url=url, log=again.append)
    assert all("present, checksum ok" in line for line in again)


def test_fetch_rejects_a_corrupt_download_and_leaves_nothing(server, tmp_path, monkeypatch):
    root, url = server
    fake_dataset(monkeypatch, root)
    (root / "b.bin").write_bytes(b"tampered")
    with pytest.raises(GradError, match="checksum mismatch"):
        fetch_module.fetch("fake", tmp_path / "data", url=url, log=lambda _: None)
    assert not (tmp_path / "data" / "fake" / "b.bin").exists()
    assert not list((tmp_path / "data" / "fake").glob("*.part"))


def test_fetch_unreachable_server_is_a_clear_error(tmp_path, monkeypatch, server):
    root, url = server
    fake_dataset(monkeypatch, root)
    with pytest.raises(GradError, match="cannot download"):
        fetch_module.fetch("fake", tmp_path / "data", url=url + "missing/", log=lambda _: None)


@needs_mnist
def test_fetch_mnist_from_a_local_mirror_of_the_real_files(server, tmp_path):
    root, url = server
    for f in (SHARED_DATA / "mnist").glob("*.gz"):
        os.symlink(f, root / f.name)
    paths = fetch_module.fetch("mnist", tmp_path, url=url, log=lambda _: None)
    assert sorted(p.name for p in paths) == sorted(fetch_module.DATASETS["mnist"]["files"])


def test_data_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADLANG_DATA", str(tmp_path))
    assert fetch_module.data_dir() == tmp_path
    monkeypatch.delenv("GRADLANG_DATA")
    assert fetch_module.data_dir() == Path.home() / ".cache" / "gradlang"
    assert fetch_module.data_dir("/x") == Path("/x")
