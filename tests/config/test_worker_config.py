"""Synapse's worker keys: read, checked, and what start-up does not support refused."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from homeserver.config import ConfigError, parse_config
from homeserver.workers import MAIN_INSTANCE, WorkerConfig, shard, unsupported_topology

REPO = Path(__file__).resolve().parents[2]
POSTGRES = {"name": "psycopg2", "args": {"host": "127.0.0.1", "user": "postgres"}}
REDIS = {"enabled": True, "host": "127.0.0.1", "port": 6379}

# The shared file of Synapse's workers documentation, in substance.
SHARED: dict[str, Any] = {
    "server_name": "example.com",
    "database": POSTGRES,
    "redis": REDIS,
    "instance_map": {
        "main": {"host": "127.0.0.1", "port": 8034},
        "event_persister1": {"host": "127.0.0.1", "port": 8035},
        "event_persister2": {"path": "/run/synapse/persister2.sock"},
    },
    "stream_writers": {"events": ["event_persister1", "event_persister2"], "typing": "master"},
    "federation_sender_instances": ["federation_sender1", "federation_sender2"],
    "pusher_instances": ["pusher1"],
    "run_background_tasks_on": "background_worker",
    "notify_appservices_from_worker": "appservice1",
}


def _workers(raw: dict[str, Any], tmp_path: Path) -> WorkerConfig:
    workers = parse_config(raw, str(tmp_path)).workers
    assert isinstance(workers, WorkerConfig)
    return workers


def test_single_process_by_default(tmp_path: Path) -> None:
    w = _workers({"server_name": "example.com"}, tmp_path)
    assert w.is_main and w.instance_name == MAIN_INSTANCE and not w.is_multi_process
    assert all(w.writes(s) for s in w.stream_writers)
    assert w.sends_federation_to("other.org") and w.runs_pushers_for("@u:example.com")
    assert w.runs_background_tasks and w.notifies_appservices and w.updates_user_directory
    # "synapse.app.homeserver" names the main process too.
    again = _workers(
        {"server_name": "example.com", "worker_app": "synapse.app.homeserver"}, tmp_path
    )
    assert again.is_main


def test_shared_file_and_a_worker_file(tmp_path: Path) -> None:
    main = _workers(SHARED, tmp_path)
    assert main.is_main and main.is_multi_process
    assert main.stream_writers["events"] == ("event_persister1", "event_persister2")
    assert main.stream_writers["typing"] == (MAIN_INSTANCE,)
    assert not main.writes("events") and main.writes("typing")
    assert main.instance_map[MAIN_INSTANCE].base_url == "http://127.0.0.1:8034"
    assert main.instance_map["event_persister2"].base_url == "unix:/run/synapse/persister2.sock"
    assert not main.runs_background_tasks and not main.notifies_appservices
    assert not main.sends_federation_to("other.org")

    worker = _workers(
        {
            **SHARED,
            "worker_app": "synapse.app.generic_worker",
            "worker_name": "federation_sender1",
            "worker_listeners": [
                {"port": 8083, "type": "http", "resources": [{"names": ["client"]}]}
            ],
        },
        tmp_path,
    )
    assert not worker.is_main and worker.instance_name == "federation_sender1"
    assert worker.worker_listeners[0].port == 8083
    # Destinations split between the two senders, each always to the same one.
    mine = [d for d in (f"server{i}.org" for i in range(200)) if worker.sends_federation_to(d)]
    assert 60 < len(mine) < 140
    assert mine == [
        d for d in (f"server{i}.org" for i in range(200)) if worker.sends_federation_to(d)
    ]


def test_shard_is_stable_and_spreads() -> None:
    instances = ["w1", "w2", "w3"]
    counts = collections.Counter(shard(instances, f"!room{i}:example.com") for i in range(3000))
    assert set(counts) == set(instances)
    assert min(counts.values()) > 800
    assert shard(instances, "!abc:example.com") == shard(list(instances), "!abc:example.com")
    assert shard(["only"], "anything") == "only"
    with pytest.raises(ValueError):
        shard([], "x")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stream_writers": {"typing": ["master", "event_persister1"]}}, "exactly one instance"),
        ({"stream_writers": {"events": ["nowhere"]}}, "not in instance_map"),
        ({"stream_writers": {"events": []}}, "at least one"),
        ({"stream_writers": {"eventz": "master"}}, "unknown stream"),
        ({"stream_writers": {"events": ["event_persister1", "event_persister1"]}}, "twice"),
        ({"worker_app": "synapse.app.nonsense", "worker_name": "w"}, "unknown application"),
        ({"worker_app": "synapse.app.generic_worker", "worker_name": "master"}, "main process"),
        ({"instance_map": {"main": {"host": "127.0.0.1", "port": 0}}}, "port"),
        ({"instance_map": {"main": "127.0.0.1:8034"}}, "mapping"),
        ({"send_federation": False, "federation_sender_instances": None}, "send_federation"),
        ({"database": None}, "PostgreSQL"),
        ({"redis": {"enabled": False}}, "Redis"),
    ],
)
def test_bad_worker_configuration_names_the_key(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    raw = {**SHARED, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, str(tmp_path))


def test_a_worker_needs_the_main_process_in_instance_map(tmp_path: Path) -> None:
    raw = {
        "server_name": "example.com",
        "database": POSTGRES,
        "redis": REDIS,
        "worker_app": "synapse.app.generic_worker",
        "worker_name": "sync1",
    }
    with pytest.raises(ConfigError, match="instance_map"):
        parse_config(raw, str(tmp_path))


def test_start_up_refuses_a_multi_process_configuration(tmp_path: Path) -> None:
    config = tmp_path / "homeserver.yaml"
    config.write_text(yaml.safe_dump(SHARED))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "homeserver.cli", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO),
        env=env,
    )
    assert done.returncode == 1
    assert "stream_writers.events: only the main process can write events yet" in done.stderr
    assert "event_persister1" in done.stderr


SYNC_WORKER: dict[str, Any] = {
    "server_name": "example.com",
    "database": POSTGRES,
    "redis": REDIS,
    "instance_map": {
        "main": {"host": "127.0.0.1", "port": 8034},
        "sync1": {"host": "127.0.0.1", "port": 8035},
    },
    "worker_app": "synapse.app.generic_worker",
    "worker_name": "sync1",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, None),
        ({"worker_app": None, "worker_name": None}, None),
        ({"stream_writers": {"typing": "master"}}, None),
        ({"stream_writers": {"typing": "sync1"}}, "stream_writers.typing: only the main"),
        ({"federation_sender_instances": ["sync1"]}, "federation_sender_instances: only"),
        ({"pusher_instances": ["sync1"]}, "pusher_instances: only"),
        ({"run_background_tasks_on": "sync1"}, "run_background_tasks_on: only"),
        ({"notify_appservices_from_worker": "sync1"}, "notify_appservices_from_worker"),
        ({"update_user_directory_from_worker": "sync1"}, "update_user_directory_from_worker"),
        ({"media_instance_running_background_jobs": "sync1"}, "media_instance_running"),
        ({"worker_app": "synapse.app.federation_sender"}, "worker_app: 'synapse.app.fed"),
        ({"worker_app": "synapse.app.synchrotron"}, None),
    ],
)
def test_supported_topologies(tmp_path: Path, change: dict[str, Any], message: str | None) -> None:
    raw = {k: v for k, v in {**SYNC_WORKER, **change}.items() if v is not None}
    refused = unsupported_topology(_workers(raw, tmp_path))
    if message is None:
        assert refused is None
    else:
        assert refused is not None and refused.startswith(message)
