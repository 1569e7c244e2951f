"""A multi-node Ray cluster on 127.0.0.1, for the multi-node tests and the ``--nodes`` benchmark.

A head node with no CPUs (it runs Ray's control plane, no work) and N worker nodes, each its own
raylet and object store, built with ``ray.cluster_utils.Cluster``: on one machine this is as close
to several machines as Ray gets (a node lost takes its worker processes and objects with it).

Run it as its own process, so the cluster's environment stays out of the caller's::

    python -m tasks.loopback_cluster --workers 2 [--cpus 1]

It prints one JSON line, ``{"address": "127.0.0.1:PORT", "workers": [node_id, ...]}``, then answers
commands on stdin, one JSON line each:

    nodes         the live nodes: [{"node_id", "address", "cpus", "head"}]
    actors        live actors: [{"class", "node_id"}]
    remove-busy   kill a worker node that hosts a live ModelWorker (SIGKILL, no graceful drain)
    add           add a worker node
    quit (or EOF) shut the cluster down

Every node binds 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set for this process when the
caller has not set it). Token authentication is whatever the caller's environment says
(RAY_AUTH_MODE, RAY_AUTH_TOKEN), as for a real cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _nodes(cluster: Any) -> list[dict[str, Any]]:
    return [
        {"node_id": n["NodeID"], "address": n["NodeManagerAddress"], "cpus": n["Resources"].get("CPU", 0),
         "head": n["NodeID"] == cluster.head_node.node_id}
        for n in cluster.global_state.node_table() if n["Alive"]
    ]


def _actors(cluster: Any) -> list[dict[str, Any]]:
    return [
        {"class": a.get("ActorClassName", ""), "node_id": a["Address"]["NodeID"]}
        for a in cluster.global_state.actor_table(None).values() if a.get("State") == "ALIVE"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker nodes besides the head")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs per worker node")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster  # after the environment: ray reads it at import

    loopback = {"node_ip_address": "127.0.0.1", "num_cpus": args.cpus}
    cluster = Cluster(initialize_head=True, head_node_args={**loopback, "num_cpus": 0, "include_dashboard": False})
    workers = {}
    for _ in range(args.workers):
        node = cluster.add_node(**loopback)
        workers[node.node_id] = node
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "workers": list(workers)}), flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            reply: Any
            if command == "nodes":
                reply = _nodes(cluster)
            elif command == "actors":
                reply = _actors(cluster)
            elif command == "remove-busy":
                busy = [a["node_id"] for a in _actors(cluster) if a["class"].endswith("ModelWorker")]
                victim = next((n for n in busy if n in workers), None)
                if victim is not None:
                    cluster.remove_node(workers.pop(victim), allow_graceful=False)
                reply = {"removed": victim}
            elif command == "add":
                node = cluster.add_node(**loopback)
                workers[node.node_id] = node
                reply = {"added": node.node_id}
            elif command == "quit":
                break
            else:
                reply = {"error": f"unknown command {command!r}"}
            print(json.dumps(reply), flush=True)
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
