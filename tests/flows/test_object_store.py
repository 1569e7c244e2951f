"""The lake's data files on S3-compatible object storage: a local S3 server (moto) on 127.0.0.1,
the catalog and the warehouse on local disk, as docs/architecture.md ("Several machines") sets out."""

import pytest

from tests.flows.conftest import Pipeline
from tests.flows.test_crash_and_readers import _keys


@pytest.fixture
def s3_server(monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
    client.create_bucket(Bucket="corpus-lake")
    yield f"{host}:{port}", client
    server.stop()


def _objects(client) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="corpus-lake")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_a_lake_on_object_storage_publishes_the_rows_a_local_lake_does(pipeline, s3_server, tmp_path):
    endpoint, client = s3_server
    pipeline.run()  # the reference: everything on local disk

    remote = Pipeline(tmp_path / "remote")
    remote.write_config(lake={"data_path": "s3://corpus-lake/sleeptime/",
                              "s3": {"endpoint": endpoint, "url_style": "path", "use_ssl": False}},
                        report_uri="s3://corpus-lake/reports/latest/")
    first = remote.run()
    assert first.status == "published" and first.counters.calls > 0
    assert _keys(remote) == _keys(pipeline)
    keys = _objects(client)
    assert any(k.startswith("sleeptime/main/answers/") and k.endswith(".parquet") for k in keys), keys[:10]
    assert not list((remote.out / "lake").rglob("*.parquet")), "data files belong in the bucket"
    report = client.get_object(Bucket="corpus-lake", Key="reports/latest/report.html")["Body"].read()
    assert report == (remote.out / "report" / "report.html").read_bytes()

    # A second run on the same bucket: nothing changed, nothing to compute, the snapshot reads back.
    second = remote.run()
    assert second.counters.calls == 0 and _keys(remote) == _keys(pipeline)


def test_missing_credentials_for_an_object_store_lake_are_a_clear_error(pipeline, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    pipeline.write_config(lake={"data_path": "s3://corpus-lake/sleeptime/", "s3": {"endpoint": "127.0.0.1:9"}})
    with pytest.raises(RuntimeError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        pipeline.run()
