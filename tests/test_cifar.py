"""CIFAR-10: `gradlang data fetch cifar10` (download, MD5, safe unpacking), the binary batch reader, the
`cifar10` data source and examples/cifar_cnn.grad. The real archive (162 MB) is never downloaded here:
a small archive with the real layout, a few records a batch file, is served from 127.0.0.1."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_data import server  # noqa: F401  (a fixture: an HTTP server on 127.0.0.1 serving a folder)

import gradlang
from gradlang import GradError
from gradlang.cli import main
from gradlang.runtime import fetch as fetch_module
from gradlang.runtime.data import DataContext, cifar10
from gradlang.runtime.formats import read_cifar10_batch, read_cifar10_classes

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cifar_cnn.grad"
ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
META = ("\n".join(CLASSES) + "\n\n").encode()


def records(count: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """`count` records of the binary format, and the images [n, 3, 32, 32] and labels they hold."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    data = b"".join(bytes([label]) + image.tobytes() for label, image in zip(labels, images))
    return data, images, labels


def batch_files(counts=(3, 2, 3, 1, 2, 4)) -> dict[str, tuple[bytes, np.ndarray, np.ndarray]]:
    return {name: records(count, seed) for seed, (name, count) in enumerate(zip(BATCHES, counts))}


def tar_gz(members: list[tuple]) -> bytes:
    """A tar.gz of (name, bytes) files, (name, None) folders and (name, TarInfo type, link) links."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, content, *link in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = content, link[0]
                tar.addfile(info)
            elif content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def real_layout(batches: dict) -> list[tuple]:
    """The members of cifar-10-binary.tar.gz, in its order, with `batches`' contents."""
    files = {name: content for name, (content, _, _) in batches.items()}
    files["batches.meta.txt"] = META
    files["readme.html"] = b'<meta HTTP-EQUIV="REFRESH" content="0; url=https://www.cs.toronto.edu/~kriz/cifar.html">\n'
    order = ["data_batch_1.bin", "batches.meta.txt", "data_batch_3.bin", "data_batch_4.bin", "test_batch.bin",
             "readme.html", "data_batch_5.bin", "data_batch_2.bin"]
    return [(FOLDER, None)] + [(f"{FOLDER}/{name}", files[name]) for name in order]


@pytest.fixture
def serve(server, monkeypatch):  # noqa: F811
    """serve(archive bytes) → the URL it is served from, with the data set's MD5 and size set to its own."""
    root, url = server

    def put(archive: bytes) -> str:
        (root / ARCHIVE).write_bytes(archive)
        spec = fetch_module.DATASETS["cifar10"]
        monkeypatch.setitem(fetch_module.DATASETS, "cifar10", {
            **spec, "files": {ARCHIVE: hashlib.md5(archive).hexdigest()}, "bytes": {ARCHIVE: len(archive)}})
        return url
    return put


def quiet(_line):
    pass


# ---- the published checksum and layout ----------------------------------------------------------------

def test_the_binary_version_is_fetched_with_its_published_md5():
    spec = fetch_module.DATASETS["cifar10"]
    assert spec["url"] == "https://www.cs.toronto.edu/~kriz/"
    assert spec["files"] == {ARCHIVE: "c32a1d4ab5d03f1284b67883e8d87530"} and spec["digest"] == "md5"
    assert spec["bytes"] == {ARCHIVE: 170_052_171}
    members = spec["unpack"][ARCHIVE]["members"]
    assert {m for m in members if m.endswith(".bin")} == {f"{FOLDER}/{b}" for b in BATCHES}
    sizes = members[f"{FOLDER}/test_batch.bin"]
    assert 10_000 * 3073 in sizes and 10_001 * 3073 not in sizes and 3073 * 5 + 1 not in sizes
    assert not any("python" in m or "pickle" in m for m in members)


# ---- fetch, unpack, read back ---------------------------------------------------------------------------

def test_fetch_unpacks_the_archive_and_the_source_reads_back_what_was_written(serve, tmp_path, capsys):
    batches = batch_files()
    url = serve(tar_gz(real_layout(batches)))
    assert main(["data", "fetch", "cifar10", "--url", url, "--data-dir", str(tmp_path / "data")]) == 0
    err = capsys.readouterr().err
    assert f"downloading {url}{ARCHIVE}" in err and "unpacked 8 files" in err
    folder = tmp_path / "data" / "cifar10" / FOLDER
    assert sorted(p.name for p in folder.iterdir()) == sorted(BATCHES + ["batches.meta.txt", "readme.html"])
    assert not [p for p in (tmp_path / "data" / "cifar10").iterdir() if p.name.startswith(".")]   # no leftovers
    assert read_cifar10_classes(folder / "batches.meta.txt") == CLASSES

    ctx = DataContext(Path("."), None, tmp_path / "data")
    train = cifar10(ctx, split="train")
    images = np.concatenate([batches[name][1] for name in BATCHES[:5]])
    labels = np.concatenate([batches[name][2] for name in BATCHES[:5]])
    assert train["x"].shape == (11, 3, 32, 32) and train["x"].dtype == np.float32
    np.testing.assert_array_equal(train["x"], images.astype(np.float32) / np.float32(255))
    assert train["y"].dtype == np.int64 and train["y"].tolist() == labels.tolist()
    # the planes are red, green, blue, each row-major: pixel (row 1, column 2) of the green plane
    first = batches["data_batch_1.bin"][0]
    assert train["x"][0, 1, 1, 2] == np.float32(first[1 + 1024 + 32 + 2]) / np.float32(255)

    test = cifar10(ctx, split="test", flatten=True)
    assert test["x"].shape == (4, 3072) and test["y"].tolist() == batches["test_batch.bin"][2].tolist()
    np.testing.assert_array_equal(test["x"][2] * 255, batches["test_batch.bin"][1][2].reshape(-1))
    few = cifar10(ctx, split="train", limit=4)   # across the first two files
    np.testing.assert_array_equal(few["x"], train["x"][:4])
    assert few["y"].tolist() == labels[:4].tolist()
    assert cifar10(ctx, split="train", limit=100)["x"].shape[0] == 11

    # a second fetch checks the archive again and leaves the files as they are
    assert main(["data", "fetch", "cifar10", "--url", url + "gone/", "--data-dir", str(tmp_path / "data")]) == 0
    err = capsys.readouterr().err
    assert "present, checksum ok" in err and "unpacked already" in err and "downloading" not in err


def test_a_file_missing_from_the_unpacked_folder_is_unpacked_again(serve, tmp_path):
    url = serve(tar_gz(real_layout(batch_files())))
    fetch_module.fetch("cifar10", tmp_path, url=url, log=quiet)
    (tmp_path / "cifar10" / FOLDER / "test_batch.bin").unlink()
    lines = []
    fetch_module.fetch("cifar10", tmp_path, url=url, log=lines.append)
    assert any("unpacked 8 files" in line for line in lines)
    assert (tmp_path / "cifar10" / FOLDER / "test_batch.bin").is_file()


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(serve, server, tmp_path):  # noqa: F811
    archive = tar_gz(real_layout(batch_files()))
    url = serve(archive)
    tampered = bytearray(archive)
    tampered[len(archive) // 2] ^= 1            # one bit, the length unchanged
    (server[0] / ARCHIVE).write_bytes(bytes(tampered))
    with pytest.raises(GradError, match=f"{ARCHIVE}: checksum mismatch \\(expected md5 [0-9a-f]{{32}}, got "):
        fetch_module.fetch("cifar10", tmp_path, url=url, log=quiet)
    assert list((tmp_path / "cifar10").iterdir()) == []


def _with(members: list[tuple], index: int | None = None, member: tuple | None = None, drop: str | None = None):
    out = [m for m in members if m[0] != drop]
    if member is not None:
        out.insert(len(out) if index is None else index, member)
    return out


LINK_TARGET = "/etc/passwd"
BATCH_2 = f"{FOLDER}/data_batch_2.bin"


@pytest.mark.parametrize("change, message", [
    (dict(member=("../escaped.bin", b"x")), "member '../escaped.bin' is not one this archive holds"),
    (dict(member=(f"{FOLDER}/../../escaped.bin", b"x"), index=1),
     f"member '{FOLDER}/../../escaped.bin' is not one this archive holds"),
    (dict(member=("/tmp/escaped.bin", b"x")), "member '/tmp/escaped.bin' is not one this archive holds"),
    (dict(member=(f"{FOLDER}/extra.bin", b"x")), f"member '{FOLDER}/extra.bin' is not one this archive holds"),
    (dict(member=(f"./{FOLDER}/test_batch.bin", b"x")), f"member './{FOLDER}/test_batch.bin' is not one"),
    (dict(member=(BATCH_2, tarfile.SYMTYPE, LINK_TARGET), index=1, drop=BATCH_2),
     f"member '{BATCH_2}' should be a regular file but is a link to '/etc/passwd'"),
    (dict(member=(BATCH_2, tarfile.LNKTYPE, LINK_TARGET), index=1, drop=BATCH_2),
     "should be a regular file but is a link to '/etc/passwd'"),
    (dict(member=(f"{FOLDER}/readme.html", tarfile.FIFOTYPE, ""), drop=f"{FOLDER}/readme.html"),
     "should be a regular file but is a device, FIFO or other special file"),
    (dict(member=(FOLDER, b"x"), index=0, drop=FOLDER), f"member '{FOLDER}' should be a folder but is a regular file"),
    (dict(member=(f"{FOLDER}/test_batch.bin", b"\x00" * 3073)), f"member '{FOLDER}/test_batch.bin' comes twice"),
    (dict(drop=f"{FOLDER}/data_batch_4.bin"), f"member '{FOLDER}/data_batch_4.bin' is missing"),
    (dict(member=(f"{FOLDER}/data_batch_4.bin", b"\x00" * 3072), drop=f"{FOLDER}/data_batch_4.bin"),
     f"member '{FOLDER}/data_batch_4.bin' holds 3,072 bytes, but it must hold a multiple of 3,073 bytes from 3,073 "
     "to 30,730,000"),
    (dict(member=(f"{FOLDER}/batches.meta.txt", b"x" * 5000), drop=f"{FOLDER}/batches.meta.txt"),
     "holds 5,000 bytes, but it must hold 1 to 4,096 bytes"),
])
def test_an_archive_with_unexpected_members_is_refused_whole(serve, tmp_path, change, message):
    members = _with(real_layout(batch_files()), **change)
    url = serve(tar_gz(members))
    data = tmp_path / "deep" / "data"
    with pytest.raises(GradError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        fetch_module.fetch("cifar10", data, url=url, log=quiet)
    # nothing of it is unpacked, and nothing lands outside: only the verified archive stays
    assert sorted(p.name for p in (data / "cifar10").iterdir()) == [ARCHIVE]
    assert [p.name for p in tmp_path.rglob("*escaped*")] == []


def test_an_archive_that_is_not_a_tar_gz_is_a_clear_error(serve, tmp_path):
    url = serve(b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(GradError, match=f"{ARCHIVE}: not a readable tar.gz archive"):
        fetch_module.fetch("cifar10", tmp_path, url=url, log=quiet)


# ---- the reader: values checked where they enter ----------------------------------------------------------

def test_the_reader_reads_records_and_stops_at_most(tmp_path):
    data, images, labels = records(5, seed=7)
    (tmp_path / "b.bin").write_bytes(data)
    got_images, got_labels = read_cifar10_batch(tmp_path / "b.bin")
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.tolist() == labels.tolist()
    first, first_labels = read_cifar10_batch(tmp_path / "b.bin", most=2)
    np.testing.assert_array_equal(first, images[:2])
    assert first_labels.tolist() == labels[:2].tolist()


@pytest.mark.parametrize("size", [0, 3072, 3074, 2 * 3073 - 1])
def test_a_batch_file_of_the_wrong_size_is_refused(tmp_path, size):
    (tmp_path / "b.bin").write_bytes(bytes(size))
    with pytest.raises(GradError, match=f"b.bin: not a CIFAR-10 batch file: its {size:,} bytes are not a whole "
                                        "number of 3,073-byte records"):
        read_cifar10_batch(tmp_path / "b.bin")


@pytest.mark.parametrize("label", [10, 255])
def test_a_label_outside_0_to_9_is_refused_naming_the_record(tmp_path, label):
    data = bytearray(records(3, seed=1)[0])
    data[2 * 3073] = label
    (tmp_path / "b.bin").write_bytes(bytes(data))
    with pytest.raises(GradError, match=rf"b.bin: record 2 \(counting from 0\) has label {label}, but CIFAR-10's "
                                        r"labels are 0\.\.9"):
        read_cifar10_batch(tmp_path / "b.bin")
    assert read_cifar10_batch(tmp_path / "b.bin", most=2)[1].shape == (2,)   # the bad record is not read


def test_a_batch_that_is_not_a_regular_file_is_refused(tmp_path):
    (tmp_path / "dir.bin").mkdir()
    with pytest.raises(GradError, match="not a regular file but a folder"):
        read_cifar10_batch(tmp_path / "dir.bin")


@pytest.mark.parametrize("text, message", [
    ("airplane\nautomobile\n", "expected CIFAR-10's 10 class names, one a line, but found 2"),
    ("\n".join(CLASSES + ["eleventh"]), "but found 11"),
    ("x" * 5000, "too long for CIFAR-10's ten class names"),
])
def test_damaged_class_names_are_refused(tmp_path, text, message):
    (tmp_path / "batches.meta.txt").write_text(text)
    with pytest.raises(GradError, match=message):
        read_cifar10_classes(tmp_path / "batches.meta.txt")


def test_a_damaged_batch_in_the_data_directory_is_an_error_at_the_declaration(tmp_path):
    folder = tmp_path / "cifar10" / FOLDER
    folder.mkdir(parents=True)
    (folder / "test_batch.bin").write_bytes(records(2, seed=3)[0] + b"\x00")
    prog = gradlang.compile('data d = cifar10(split: "test")\ninput x : f32[B, 3, 32, 32]\ninput y : i64[B]\n'
                            "param w : [3072, 10]\nloss = cross_entropy(reshape(x, [x.shape[0], 3072]) @ w, y)\n"
                            "train {\n  data = d\n}\n")
    prog.data_dir = tmp_path
    with pytest.raises(GradError, match="test_batch.bin: not a CIFAR-10 batch file: its 6,147 bytes") as err:
        prog.load_data()
    assert err.value.span is not None and err.value.span.line == 1


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(GradError, match=r"CIFAR-10 is not in .*cifar-10-batches-bin \(missing data_batch_1.bin\); "
                                        r"run `gradlang data fetch cifar10`"):
        cifar10(DataContext(Path("."), None, tmp_path))


@pytest.mark.parametrize("call, message", [
    ('cifar10(split: "valid")', 'cifar10(split: "valid"): split must be "train" or "test"'),
    ("cifar10(limit: -1)", "limit must be"),
    ("cifar10(flatten: 1)", "cifar10(flatten: …) must be true or false"),
])
def test_settings_are_checked_where_they_are_written(call, message):
    with pytest.raises(GradError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gradlang.compile(f"data d = {call}\ninput x : f32[B, 3072]\nloss = sum(x)\ntrain {{\n  data = d\n}}\n")


# ---- examples/cifar_cnn.grad ----------------------------------------------------------------------------------

def test_the_example_takes_one_step_on_random_images():
    prog = gradlang.compile(EXAMPLE)
    rng = np.random.default_rng(0)
    feed = {"x": rng.random((8, 3, 32, 32), dtype=np.float32), "y": rng.integers(0, 10, size=8)}
    before = {name: value.copy() for name, value in prog.params.items()}
    loss = prog.loss(feed)
    assert np.isfinite(loss) and 1.0 < loss < 5.0     # about ln 10 at the start
    prog.step(feed)
    assert all(not np.array_equal(before[name], prog.params[name]) for name in before)
    assert prog.predict(feed)["label"].shape == (8,)


def test_the_example_without_the_data_says_how_to_get_it(tmp_path, capsys):
    assert main(["run", str(EXAMPLE), "--data-dir", str(tmp_path), "--out", str(tmp_path / "p.npz")]) == 1
    err = capsys.readouterr().err
    assert "cifar_cnn.grad:7:" in err and "run `gradlang data fetch cifar10`" in err
    assert not (tmp_path / "p.npz").exists()


def test_the_example_lists_the_files_it_would_read(tmp_path, capsys):
    assert main(["run", str(EXAMPLE), "--dry-run", "--json", "--data-dir", str(tmp_path)]) == 0
    reads = {r["data"]: r for r in json.loads(capsys.readouterr().out)["reads"]}
    folder = (tmp_path / "cifar10" / FOLDER).resolve()
    assert reads["train_set"]["files"] == [str(folder / name) for name in BATCHES[:5]]
    assert reads["train_set"]["used_as"] == ["data"]
    assert reads["test_set"]["files"] == [str(folder / "test_batch.bin")] and reads["test_set"]["used_as"] == ["test"]


def test_the_example_trains_on_fetched_data(serve, tmp_path, capsys):
    """End to end on the small archive: fetch, then `gradlang run` trains its 10 epochs (one step each)."""
    url = serve(tar_gz(real_layout(batch_files())))
    assert main(["data", "fetch", "cifar10", "--url", url, "--data-dir", str(tmp_path / "data")]) == 0
    capsys.readouterr()
    assert main(["run", str(EXAMPLE), "--json", "--data-dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "cnn.npz")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 10 and np.isfinite(result["loss"])
    assert set(result["test"]) >= {"accuracy", "loss"}
