"""Which process does what: Synapse's worker configuration keys, read and checked.

A deployment is one main process (instance ``master``, as Synapse names it) and any
number of workers started from the same binary with an extra config file naming them
(``worker_app``, ``worker_name``, ``worker_listeners``). The shared file says who
writes each stream (``stream_writers``), who sends federation and pushes, and where
each instance listens (``instance_map``). The keys, defaults and rules are Synapse's,
so an admin's files work unchanged.

Sharding (events by room, federation by destination, pushers by user) uses one hash:
SHA-256 of the key, little-endian, modulo the number of instances, as Synapse does, so a
deployment moved from Synapse keeps each destination's queue on the same sender.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MAIN_INSTANCE = "master"
# What `instance_map` calls the main process.
MAIN_INSTANCE_MAP_NAME = "main"

MAIN_APP = "synapse.app.homeserver"
GENERIC_WORKER_APP = "synapse.app.generic_worker"
# Older Synapse worker apps: each is now a generic worker with a duty set by a key.
LEGACY_WORKER_APPS = {
    "synapse.app.appservice",
    "synapse.app.client_reader",
    "synapse.app.event_creator",
    "synapse.app.federation_reader",
    "synapse.app.federation_sender",
    "synapse.app.frontend_proxy",
    "synapse.app.media_repository",
    "synapse.app.pusher",
    "synapse.app.synchrotron",
    "synapse.app.user_dir",
}

STREAMS = ("events", "typing", "to_device", "account_data", "receipts", "presence")
# Streams whose ids one process allocates in memory: a second writer could not agree.
SINGLE_WRITER_STREAMS = ("typing", "to_device", "account_data", "presence")


class WorkerConfigError(ValueError):
    """A worker key at fault; the message names it (the config layer adds nothing)."""


@dataclass(frozen=True)
class InstanceLocation:
    """Where another instance answers internal HTTP requests: TCP, or a UNIX socket."""

    host: str | None = None
    port: int | None = None
    tls: bool = False
    path: str | None = None

    @property
    def base_url(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


def shard(instances: Sequence[str], key: str) -> str:
    """The instance of ``instances`` that handles ``key`` (a room, destination, user)."""
    if not instances:
        raise ValueError("no instance to shard over")
    if len(instances) == 1:
        return instances[0]
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return instances[int.from_bytes(digest, "little") % len(instances)]


@dataclass(frozen=True)
class WorkerConfig:
    worker_app: str | None  # None for the main process
    instance_name: str
    worker_listeners: list[Any] = field(default_factory=list)  # ListenerConfig
    instance_map: dict[str, InstanceLocation] = field(default_factory=dict)
    stream_writers: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {s: (MAIN_INSTANCE,) for s in STREAMS}
    )
    federation_sender_instances: tuple[str, ...] = (MAIN_INSTANCE,)
    pusher_instances: tuple[str, ...] = (MAIN_INSTANCE,)
    run_background_tasks_on: str = MAIN_INSTANCE
    notify_appservices_from_worker: str | None = None
    update_user_directory_from_worker: str | None = None
    media_instance_running_background_jobs: str | None = None

    @property
    def is_main(self) -> bool:
        return self.worker_app is None

    @property
    def instances(self) -> set[str]:
        """Every instance the configuration names."""
        named = {MAIN_INSTANCE, self.instance_name, *self.instance_map}
        for writers in self.stream_writers.values():
            named.update(writers)
        named.update(self.federation_sender_instances, self.pusher_instances)
        named.add(self.run_background_tasks_on)
        for duty in (
            self.notify_appservices_from_worker,
            self.update_user_directory_from_worker,
            self.media_instance_running_background_jobs,
        ):
            if duty is not None:
                named.add(duty)
        return named

    @property
    def is_multi_process(self) -> bool:
        """Whether any process other than the main one takes part."""
        return self.instances != {MAIN_INSTANCE}

    def writes(self, stream: str) -> bool:
        return self.instance_name in self.stream_writers[stream]

    def events_writer_for(self, room_id: str) -> str:
        return shard(self.stream_writers["events"], room_id)

    def sends_federation_to(self, destination: str) -> bool:
        senders = self.federation_sender_instances
        return bool(senders) and shard(senders, destination) == self.instance_name

    def runs_pushers_for(self, user_id: str) -> bool:
        pushers = self.pusher_instances
        return bool(pushers) and shard(pushers, user_id) == self.instance_name

    @property
    def runs_background_tasks(self) -> bool:
        return self.run_background_tasks_on == self.instance_name

    @property
    def notifies_appservices(self) -> bool:
        wanted = self.notify_appservices_from_worker or MAIN_INSTANCE
        return wanted == self.instance_name

    @property
    def updates_user_directory(self) -> bool:
        wanted = self.update_user_directory_from_worker or MAIN_INSTANCE
        return wanted == self.instance_name

    @property
    def runs_media_background_jobs(self) -> bool:
        wanted = self.media_instance_running_background_jobs or MAIN_INSTANCE
        return wanted == self.instance_name


def _names(key: str, value: Any) -> tuple[str, ...]:
    """An instance name or a list of them (Synapse accepts both)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise WorkerConfigError(f"{key}: expected an instance name or a list of them")
    if len(set(value)) != len(value):
        raise WorkerConfigError(f"{key}: an instance is named twice")
    return tuple(value)


def _location(key: str, value: Any) -> InstanceLocation:
    if not isinstance(value, dict):
        raise WorkerConfigError(f"{key}: expected a mapping with host and port, or path")
    if "path" in value:
        if not isinstance(value["path"], str) or not value["path"]:
            raise WorkerConfigError(f"{key}.path: expected the path of a UNIX socket")
        return InstanceLocation(path=value["path"])
    host, port, tls = value.get("host"), value.get("port"), value.get("tls", False)
    if not isinstance(host, str) or not host:
        raise WorkerConfigError(f"{key}.host: expected a host name or address")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise WorkerConfigError(f"{key}.port: expected a port between 1 and 65535")
    if not isinstance(tls, bool):
        raise WorkerConfigError(f"{key}.tls: expected true or false")
    return InstanceLocation(host=host, port=port, tls=tls)


def _optional_name(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise WorkerConfigError(f"{key}: expected an instance name")
    return value


def parse_worker_config(
    raw: dict[str, Any], parse_listeners: Callable[[str, Any], list[Any]]
) -> WorkerConfig:
    """The worker keys of a merged configuration mapping, checked as Synapse checks them.

    ``parse_listeners`` reads ``worker_listeners`` in the ``listeners`` format.
    """
    app = raw.get("worker_app")
    if app is not None and not isinstance(app, str):
        raise WorkerConfigError("worker_app: expected a string")
    if app == MAIN_APP:
        app = None
    if app is not None and app != GENERIC_WORKER_APP and app not in LEGACY_WORKER_APPS:
        raise WorkerConfigError(
            f"worker_app: unknown application {app!r}; expected {GENERIC_WORKER_APP!r}"
            f" (or {MAIN_APP!r} for the main process)"
        )
    name = _optional_name("worker_name", raw.get("worker_name"))
    if app is None:
        instance_name = MAIN_INSTANCE
    else:
        instance_name = name or app  # Synapse's default
        if instance_name == MAIN_INSTANCE:
            raise WorkerConfigError(f"worker_name: {MAIN_INSTANCE!r} is the main process's name")
    listeners = parse_listeners("worker_listeners", raw.get("worker_listeners") or [])

    raw_map = raw.get("instance_map") or {}
    if not isinstance(raw_map, dict):
        raise WorkerConfigError("instance_map: expected a mapping of instance names")
    instance_map: dict[str, InstanceLocation] = {}
    for inst, loc in raw_map.items():
        if not isinstance(inst, str) or not inst:
            raise WorkerConfigError("instance_map: instance names must be strings")
        target = MAIN_INSTANCE if inst == MAIN_INSTANCE_MAP_NAME else inst
        instance_map[target] = _location(f"instance_map.{inst}", loc)
    if app is not None and MAIN_INSTANCE not in instance_map:
        raise WorkerConfigError(
            f"instance_map: a worker needs {MAIN_INSTANCE_MAP_NAME!r} (where the main"
            " process listens for internal requests) in the shared configuration"
        )

    raw_writers = raw.get("stream_writers") or {}
    if not isinstance(raw_writers, dict):
        raise WorkerConfigError("stream_writers: expected a mapping of stream names")
    for stream in raw_writers:
        if stream not in STREAMS:
            raise WorkerConfigError(
                f"stream_writers.{stream}: unknown stream; expected one of {', '.join(STREAMS)}"
            )
    writers: dict[str, tuple[str, ...]] = {}
    for stream in STREAMS:
        key = f"stream_writers.{stream}"
        names = _names(key, raw_writers.get(stream, MAIN_INSTANCE))
        if not names:
            raise WorkerConfigError(f"{key}: at least one instance must write {stream}")
        if stream in SINGLE_WRITER_STREAMS and len(names) != 1:
            raise WorkerConfigError(f"{key}: exactly one instance may write {stream}")
        for inst in names:
            if inst != MAIN_INSTANCE and inst not in instance_map:
                raise WorkerConfigError(
                    f"{key}: instance {inst!r} writes {stream} but is not in instance_map"
                    " (the others must be able to reach it)"
                )
        writers[stream] = names

    senders = _duty_instances(raw, "federation_sender_instances", "send_federation")
    pushers = _duty_instances(raw, "pusher_instances", "start_pushers")
    background = _optional_name("run_background_tasks_on", raw.get("run_background_tasks_on"))
    return WorkerConfig(
        worker_app=app,
        instance_name=instance_name,
        worker_listeners=listeners,
        instance_map=instance_map,
        stream_writers=writers,
        federation_sender_instances=senders,
        pusher_instances=pushers,
        run_background_tasks_on=background or MAIN_INSTANCE,
        notify_appservices_from_worker=_optional_name(
            "notify_appservices_from_worker", raw.get("notify_appservices_from_worker")
        ),
        update_user_directory_from_worker=_optional_name(
            "update_user_directory_from_worker", raw.get("update_user_directory_from_worker")
        ),
        media_instance_running_background_jobs=_optional_name(
            "media_instance_running_background_jobs",
            raw.get("media_instance_running_background_jobs"),
        ),
    )


def _duty_instances(raw: dict[str, Any], key: str, legacy_flag: str) -> tuple[str, ...]:
    """``federation_sender_instances`` / ``pusher_instances``; the legacy main-process
    flag (``send_federation: false``) without a list means workers do it, and a list
    must then be given."""
    if key in raw and raw[key] is not None:
        return _names(key, raw[key])
    flag = raw.get(legacy_flag, True)
    if not isinstance(flag, bool):
        raise WorkerConfigError(f"{legacy_flag}: expected true or false")
    if not flag:
        raise WorkerConfigError(f"{legacy_flag}: false needs {key} naming the workers that do it")
    return (MAIN_INSTANCE,)


def unsupported_topology(workers: WorkerConfig) -> str | None:
    """Why this deployment cannot run yet (naming the key at fault), or None.

    Supported: the main process does every write and every background duty; workers
    (generic, any number) only serve client reads and /sync (docs/workers.md).
    """
    for stream in STREAMS:
        writers = workers.stream_writers[stream]
        if writers != (MAIN_INSTANCE,):
            return (
                f"stream_writers.{stream}: only the main process can write {stream} yet"
                f" (named: {', '.join(writers)})"
            )
    for key, names in (
        ("federation_sender_instances", workers.federation_sender_instances),
        ("pusher_instances", workers.pusher_instances),
    ):
        if names != (MAIN_INSTANCE,):
            return f"{key}: only the main process can do this yet (named: {', '.join(names)})"
    for key, name in (
        ("run_background_tasks_on", workers.run_background_tasks_on),
        ("notify_appservices_from_worker", workers.notify_appservices_from_worker),
        ("update_user_directory_from_worker", workers.update_user_directory_from_worker),
        (
            "media_instance_running_background_jobs",
            workers.media_instance_running_background_jobs,
        ),
    ):
        if name is not None and name != MAIN_INSTANCE:
            return f"{key}: only the main process can do this yet (named: {name})"
    if not workers.is_main and workers.worker_app not in READER_WORKER_APPS:
        return (
            f"worker_app: {workers.worker_app!r} is not supported yet; a worker can only"
            f" serve client reads and /sync ({', '.join(sorted(READER_WORKER_APPS))})"
        )
    return None


# Worker apps whose duty is client reads only (the rest name writers or senders).
READER_WORKER_APPS = frozenset(
    {GENERIC_WORKER_APP, "synapse.app.client_reader", "synapse.app.synchrotron"}
)
