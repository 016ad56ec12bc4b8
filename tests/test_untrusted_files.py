"""Issue 22: the one careful reader (edgeffnet.core.untrusted) and the files that go through it: label lists,
evaluation data, CSVs, folder names, a farm's bundle archive. A device, a FIFO, an endless or oversized
file, deep nesting, NaN, a path out of its folder, a label that only looks like a number: one line each,
a non-zero exit, nothing written.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest
from conftest import assert_refused as refused
from hostile_cli import build_bundle, files_under, png

from edgeffnet.core import untrusted
from edgeffnet.core.errors import UserError
from edgeffnet.measure import evaluate as ev

# -- the reader itself ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,why",
    [
        ("/dev/zero", "not a regular file"),
        ("/dev/null", "not a regular file"),
        ("fifo", "not a regular file"),
        ("directory", "is a directory"),
        ("missing", "does not exist"),
        ("link to /dev/urandom", "not a regular file"),
        ("oversized", "over the 1,024-byte limit"),
    ],
)
def test_read_bytes_reads_only_capped_regular_files(tmp_path, kind, why):
    path = {"/dev/zero": Path("/dev/zero"), "/dev/null": Path("/dev/null")}.get(kind, tmp_path / "f")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "link to /dev/urandom":
        path.symlink_to("/dev/urandom")
    elif kind == "oversized":
        path.write_bytes(b"x" * 1025)
    done = threading.Event()

    def read():
        with pytest.raises(untrusted.UntrustedFileError, match=why):
            untrusted.read_bytes(path, 1024)
        done.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert done.is_set(), "the read blocked"


@pytest.mark.parametrize(
    "text,why",
    [
        ("[" * 65 + "]" * 65, "nests deeper than 64"),
        ('{"a": ' * 1000 + "1" + "}" * 1000, "nests deeper than 64"),
        ('{"p50": NaN}', "not valid JSON"),
        ('{"p50": -Infinity}', "not valid JSON"),
        ("{'single': 'quotes'}", "not valid JSON"),
        ("", "not valid JSON"),
    ],
)
def test_parse_json_bounds_depth_and_refuses_non_numbers(text, why):
    with pytest.raises(untrusted.UntrustedFileError, match=why):
        untrusted.parse_json(text, "test")


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert untrusted.parse_json('{"a": "' + "[" * 500 + '"}')["a"] == "[" * 500


@pytest.mark.parametrize(
    "value,kinds,ok",
    [
        (3, int, True),
        (True, int, False),
        (3.0, int, False),
        (3, float, True),
        ("3", int, False),
        (None, (dict, type(None)), True),
        ([1], dict, False),
        (float("nan"), float, False),
    ],
)
def test_field_checks_types_and_finiteness(value, kinds, ok):
    if ok:
        assert untrusted.field({"k": value}, "k", kinds) == value
    else:
        with pytest.raises(untrusted.UntrustedFileError, match="'k'"):
            untrusted.field({"k": value}, "k", kinds)


def test_check_fields_follows_a_dataclass_declaration():
    from edgeffnet.bundle import Manifest

    untrusted.check_fields(Manifest, {"num_classes": 10, "fidelity": None, "build_seconds": 3}, "m")
    for bad in ({"num_classes": "10"}, {"fidelity": []}, {"files": "a,b"}, {"build_seconds": False}):
        with pytest.raises(untrusted.UntrustedFileError):
            untrusted.check_fields(Manifest, bad, "m")


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../x", "", "link/inside"])
def test_confined_refuses_paths_out_of_their_root(tmp_path, rel):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(untrusted.UntrustedFileError):
        untrusted.confined(root, rel)
    assert untrusted.confined(root, "a/b.onnx") == root.resolve() / "a" / "b.onnx"


# -- labels and evaluation data -----------------------------------------------------------------------------

IMAGENET, _ = ev.class_list(1000)


@pytest.mark.parametrize("label", ["²", "①", "٣", "１２", "7" * 4300, "12" * 10, "n０１４４０７６４", " ³ "])
def test_a_label_that_only_looks_like_a_number_is_no_class(label):
    assert ev.Labels(IMAGENET, imagenet=True).index(label) is None


def test_an_ambiguous_name_lists_a_few_classes_not_all(tmp_path):
    names = ["cat" if i % 27 == 0 else f"class {i}" for i in range(1000)]  # 'cat' names 38 classes
    with pytest.raises(UserError) as e:
        ev.Labels(names, imagenet=False).index("CAT")
    msg = str(e.value)
    assert "names 38 classes (0, 27, 54, 81, 108, ...)" in msg and len(msg) < 200 and "WordNet" not in msg


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("untrusted")
    return build_bundle(root / "b0-64", root / "cache")


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_eval_classes_that_cannot_be_read_safely_are_one_line(cli, built, tmp_path):
    data = png(tmp_path / "data" / "a.png").parent
    big = tmp_path / "big.txt"
    big.write_text("x\n" * (5 << 20))
    before = files_under(built)
    for classes, why in (
        (Path("/dev/zero"), "not a regular file"),
        (_fifo(tmp_path / "fifo"), "not a regular file"),
        (tmp_path, "is a directory"),
        (big, "over the 8,388,608-byte limit"),
    ):
        refused(cli("eval", built, "--data", data, "--classes", classes), "--classes", why)
    assert files_under(built) == before


@pytest.mark.parametrize(
    "kind,why",
    [
        ("/dev/null", "not a regular file"),
        ("fifo", "not a regular file"),
        ("link to /dev/zero", "not a regular file"),
        ("csv of 10 MB", "over the 8,388,608-byte limit"),
        ("csv not utf-8", "not UTF-8 text"),
        ("csv with unicode digit labels", "label '²' is not a class"),
        ("csv with a 4300-digit label", "is not a class"),
        ("csv with an ambiguous label", "names 2 classes"),
    ],
)
def test_eval_data_that_cannot_be_read_safely_is_one_line(cli, built, tmp_path, kind, why):
    image = png(tmp_path / "img" / "a.png")
    data = tmp_path / "data.csv"
    if kind == "/dev/null":
        data = Path("/dev/null")
    elif kind == "fifo":
        _fifo(data)
    elif kind == "link to /dev/zero":
        data.symlink_to("/dev/zero")
    elif kind == "csv of 10 MB":
        data.write_text(f"{image},0\n" * ((10 << 20) // 20))
    elif kind == "csv not utf-8":
        data.write_bytes(b"path,label\n\xff\xfe,0\n")
    elif kind == "csv with unicode digit labels":
        data.write_text(f"{image},²\n{image},①\n")
    elif kind == "csv with a 4300-digit label":
        data.write_text(f"{image},{'9' * 4300}\n")
    elif kind == "csv with an ambiguous label":
        data.write_text(f"{image},cardigan\n")
    before = files_under(built)
    line = refused(cli("eval", built, "--data", data), why)
    assert "9" * 100 not in line
    assert files_under(built) == before


@pytest.mark.parametrize("folder", ["²", "①", "3" * 4300, "٣"])
def test_a_class_folder_named_by_a_non_ascii_or_endless_number_is_one_line(cli, built, tmp_path, folder):
    data = tmp_path / "data"
    png(data / folder[:200] / "a.png")
    png(data / "n01440764" / "b.png")
    before = files_under(built)
    line = refused(cli("eval", built, "--data", data), "1 folder name(s)", "are not classes")
    assert len(line) < 400
    assert files_under(built) == before


# -- a farm's bundle archive (the device unpacks what the workstation sent) ----------------------------------


def _tar(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, kind=tarfile.REGTYPE, data: bytes | None = b"x", **attrs):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize(
    "members,why",
    [
        ([_member("../escape.txt")], "leads outside"),
        ([_member("/etc/evil")], "not a path inside it"),
        ([_member("link", tarfile.SYMTYPE, linkname="/etc/passwd")], "not a plain file"),
        ([_member("hard", tarfile.LNKTYPE, linkname="manifest.json")], "not a plain file"),
        ([_member("dev", tarfile.CHRTYPE, devmajor=1, devminor=5)], "not a plain file"),
        ([_member("pipe", tarfile.FIFOTYPE)], "not a plain file"),
        ([_member(f"f{i}") for i in range(300)], "more than 256"),
    ],
)
def test_a_hostile_bundle_archive_is_refused_before_anything_is_written(tmp_path, members, why):
    from edgeffnet.farm import device

    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UserError, match=why):
        device.unpack(_tar(*members), dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "escape.txt").exists()


def test_an_archive_claiming_more_than_the_cap_is_refused_from_its_headers(tmp_path, monkeypatch):
    from edgeffnet.farm import device

    monkeypatch.setattr(device, "MAX_ARCHIVE_BYTES", 1000)
    with pytest.raises(UserError, match="more than 1,000"):
        device.unpack(_tar(_member("a", data=b"x" * 600), _member("b", data=b"y" * 600)), tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="cannot be unpacked"):
        device.unpack(b"not a tar at all" * 100, tmp_path)


def test_a_good_archive_still_unpacks(tmp_path):
    from edgeffnet.farm import device

    src = tmp_path / "src"
    (src / "bench").mkdir(parents=True)
    (src / "manifest.json").write_text(json.dumps({"a": 1}))
    (src / "bench" / "r.json").write_text("{}")
    device.unpack(device.archive(src, ["manifest.json", "bench", "bench/r.json"]), tmp_path / "dest")
    assert json.loads((tmp_path / "dest" / "manifest.json").read_text()) == {"a": 1}
    assert (tmp_path / "dest" / "bench" / "r.json").read_text() == "{}"
