"""API keys: hashed at rest, one tenant each, revocable, managed from the command line."""

import json
import stat

import pytest
from typer.testing import CliRunner

from sleeptime.service.cli import service_app
from sleeptime.service.keys import KeyStore


def test_create_verify_revoke(tmp_path):
    store = KeyStore(tmp_path / "service" / "api_keys.json")
    key_id, secret = store.create("acme")
    assert secret.startswith(f"st_{key_id}_") and len(secret) > 50
    info = store.verify(secret)
    assert info.key_id == key_id and info.tenant == "acme" and info.active
    assert store.verify(f"Bearer {secret}") is None
    assert store.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.verify("") is None and store.verify(None) is None and store.verify("st_k_000000000000_" + "x" * 43) is None
    other_id, other = store.create("globex")
    assert store.verify(other).tenant == "globex"
    revoked = store.revoke(key_id)
    assert revoked.revoked_at and store.verify(secret) is None and store.verify(other).tenant == "globex"
    assert [(k.key_id, k.active) for k in store.list()] == [(key_id, False), (other_id, True)]
    with pytest.raises(KeyError):
        store.revoke("k_nope")
    for bad in ("", "a b", "x" * 65, "../etc"):
        with pytest.raises(ValueError):
            store.create(bad)


def test_the_file_holds_hashes_only_and_is_private(tmp_path):
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    _, secret = store.create("acme")
    text = path.read_text()
    assert secret not in text and secret.rsplit("_", 1)[-1] not in text
    record = json.loads(text)["keys"][0]
    assert set(record) == {"key_id", "tenant", "salt", "sha256", "created_at", "revoked_at"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_running_reader_sees_keys_created_and_revoked_elsewhere(tmp_path):
    path = tmp_path / "keys.json"
    reader, writer = KeyStore(path), KeyStore(path)
    assert reader.verify("st_k_000000000000_" + "x" * 43) is None
    key_id, secret = writer.create("acme")
    assert reader.verify(secret).tenant == "acme"
    writer.revoke(key_id)
    assert reader.verify(secret) is None


def test_keys_cli(tmp_path):
    runner = CliRunner()
    path = tmp_path / "k.json"
    created = runner.invoke(service_app, ["keys", "create", "acme", "--keys-file", str(path)])
    assert created.exit_code == 0, created.output
    secret = created.output.strip().splitlines()[-1]
    key_id = created.output.split("key id: ")[1].split()[0]
    assert KeyStore(path).verify(secret).tenant == "acme"
    listed = runner.invoke(service_app, ["keys", "list", "--keys-file", str(path)])
    assert key_id in listed.output and "active" in listed.output and secret not in listed.output
    revoked = runner.invoke(service_app, ["keys", "revoke", key_id, "--keys-file", str(path)])
    assert revoked.exit_code == 0 and KeyStore(path).verify(secret) is None
    assert runner.invoke(service_app, ["keys", "revoke", "k_nope", "--keys-file", str(path)]).exit_code == 2
    assert runner.invoke(service_app, ["keys", "create", "bad tenant", "--keys-file", str(path)]).exit_code == 2
    # The default file follows the output folder.
    default = runner.invoke(service_app, ["keys", "create", "globex", "--output-dir", str(tmp_path / "out")])
    assert default.exit_code == 0 and (tmp_path / "out" / "service" / "api_keys.json").is_file()
