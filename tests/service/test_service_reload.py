"""Hot reload: a snapshot published while requests are in flight is picked up without a failed
or blocked request; a snapshot that cannot be loaded leaves the old one serving."""

import os
import threading
import time

from fastapi.testclient import TestClient

from sleeptime.service import ServiceSettings, create_app
from sleeptime.storage import Lake
from sleeptime.storage.warehouse import Warehouse


def test_publish_under_load_swaps_snapshots_without_errors(served, helpers, tmp_path):
    config = helpers.copy_output(served, tmp_path / "out")
    warehouse, lake = Warehouse(config.warehouse_path), Lake(config.lake_dir)
    settings = ServiceSettings(config=config, keys_path=served.keys.path, reload_interval_s=0.05, query_log=False)
    headers = served.headers("acme")
    with TestClient(create_app(settings)) as client:
        first = helpers.wait_ready(client)
        assert client.post("/v1/answer", json={"context_id": served.extra_id, "question": "How many?"},
                           headers=headers).status_code == 404

        statuses: list[int] = []
        snapshots: set[str] = set()
        slowest = [0.0]
        stop = threading.Event()

        def fire() -> None:
            questions = ["How many coins do Hugo and Sara have together?", "How many coins does Hugo have?"]
            i = 0
            while not stop.is_set():
                t = time.perf_counter()
                r = client.post("/v1/answer", json={"context_id": served.ids("acme")[i % 3], "question": questions[i % 2]},
                                headers=headers)
                slowest[0] = max(slowest[0], time.perf_counter() - t)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    snapshots.add(r.json()["snapshot"])
                i += 1

        threads = [threading.Thread(target=fire) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            helpers.write_rows(lake, served, {served.extra_id}, "r20260102T000000000000")
            helpers.publish(warehouse, lake, config.policy_settings)
            second = helpers.wait_ready(client, snapshot=first["snapshot"])
            time.sleep(0.3)  # keep firing on the new snapshot
            # A second publish while still under load (a run that only adds its own row).
            lake.write("runs", [{"run_id": "r20260103T000000000000", "status": "published", "detail_json": "{}"}])
            helpers.publish(warehouse, lake, config.policy_settings)
            third = helpers.wait_ready(client, snapshot=second["snapshot"])
            time.sleep(0.2)
        finally:
            stop.set()
            for t in threads:
                t.join()

        assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        assert {first["snapshot"], second["snapshot"]} <= snapshots
        assert second["contexts"] == first["contexts"] + 1 == third["contexts"]
        assert third["reloads"] == 3
        assert slowest[0] < 5.0
        r = client.post("/v1/answer", json={"context_id": served.extra_id, "question": "How many coins does Hugo have?"},
                        headers=headers)
        assert r.status_code == 200 and r.json()["snapshot"] == third["snapshot"]
        assert served.extra_id in [c["context_id"] for c in client.get("/v1/contexts", headers=headers).json()["contexts"]]
        assert served.extra_id not in [c["context_id"] for c in client.get("/v1/contexts", headers=served.headers("globex")).json()["contexts"]]


def test_a_snapshot_that_fails_to_load_keeps_the_old_one(served, helpers, tmp_path):
    config = helpers.copy_output(served, tmp_path / "out")
    warehouse, lake = Warehouse(config.warehouse_path), Lake(config.lake_dir)
    settings = ServiceSettings(config=config, keys_path=served.keys.path, reload_interval_s=0.05, query_log=False)
    with TestClient(create_app(settings)) as client:
        good = helpers.wait_ready(client)
        broken = warehouse.path.parent / ".broken.duckdb"
        broken.write_bytes(b"this is not a duckdb file" * 100)
        os.replace(broken, warehouse.path)  # published the way a publish does: one rename
        deadline = time.monotonic() + 10
        while client.get("/readyz").json().get("last_error") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["snapshot"] == good["snapshot"] and ready.json()["last_error"]
        r = client.post("/v1/answer", json={"context_id": served.ids("acme")[0], "question": "How many coins does Hugo have?"},
                        headers=served.headers("acme"))
        assert r.status_code == 200 and r.json()["snapshot"] == good["snapshot"]
        assert 'sleeptime_snapshot_reloads_total{result="error"} 1' in client.get("/metrics").text
        warehouse.rebuild(lake)  # `sleeptime warehouse rebuild`: the next good file is picked up
        deadline = time.monotonic() + 10
        while client.get("/readyz").json().get("last_error") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        recovered = client.get("/readyz").json()
        # The same lake snapshot as before the damage, in a new file.
        assert recovered["last_error"] is None and recovered["reloads"] == 2
        assert recovered["snapshot"] == good["snapshot"]


def test_not_ready_until_a_snapshot_exists(served, helpers, tmp_path):
    config = served.config.model_copy(update={"output_dir": tmp_path / "empty"})
    settings = ServiceSettings(config=config, keys_path=served.keys.path, reload_interval_s=0.05, query_log=False)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and "no published warehouse" in r.json()["reason"]
        answer = client.post("/v1/answer", json={"context_id": "world-00000", "question": "How many?"}, headers=served.headers("acme"))
        assert answer.status_code == 503 and "no warehouse snapshot loaded" in answer.json()["detail"]["reason"]
        helpers.copy_output(served, tmp_path / "empty")
        assert helpers.wait_ready(client)["contexts"] == 6
