"""The worker's state in Faust tables: the dedupe memory (:class:`BucketedSeen`) and the
hourly aggregates, behind :class:`pipeline.worker.processor.Tables` (:class:`FaustTables`)."""

from __future__ import annotations

import json
import weakref
from collections.abc import MutableMapping
from typing import Any

from pipeline.domain.aggregate import Agg
from pipeline.domain.events import DedupeBucket, DedupeKey
from pipeline.domain.usage import HourlyKey, hourly_key_bytes
from pipeline.worker.processor import Message


class BucketedSeen(MutableMapping[DedupeKey, int]):
    """The dedupe memory as ``DedupeKey -> version``, stored in buckets (one table value per
    tenant, source and start minute: JSON ``{id: version}``, under the bucket's JSON array as
    key). Reads load a bucket once per batch; writes change the cached bucket, and
    :meth:`flush` writes each changed bucket once, to the changelog partition of the message
    that changed it."""

    def __init__(self, table: Any, bind: Any) -> None:
        self._t = table
        self._bind = bind
        self._cache: dict[DedupeBucket, dict[str, int]] = {}
        self._dirty: dict[DedupeBucket, Message] = {}
        self.current: Message | None = None

    @staticmethod
    def bucket_bytes(bucket: DedupeBucket) -> bytes:
        return json.dumps(
            [bucket.tenant_id, bucket.source, bucket.minute_us],
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()

    def _members(self, bucket: DedupeBucket) -> dict[str, int]:
        members = self._cache.get(bucket)
        if members is None:
            raw = self._t.get(self.bucket_bytes(bucket))
            members = json.loads(raw) if raw else {}
            self._cache[bucket] = members
        return members

    def __getitem__(self, key: DedupeKey) -> int:
        return self._members(key.bucket)[key.event_id]

    def get(self, key: DedupeKey, default: Any = None) -> Any:
        return self._members(key.bucket).get(key.event_id, default)

    def __setitem__(self, key: DedupeKey, value: int) -> None:
        self._members(key.bucket)[key.event_id] = value
        if key.bucket not in self._dirty and self.current is not None:
            self._dirty[key.bucket] = self.current

    def __delitem__(self, key: DedupeKey) -> None:
        raise NotImplementedError("the dedupe memory only grows")

    def __iter__(self) -> Any:
        raise NotImplementedError("not iterable")

    def __len__(self) -> int:
        return len(self._cache)

    def flush(self) -> int:
        written = len(self._dirty)
        for bucket, msg in self._dirty.items():
            self._bind(msg)
            self._t[self.bucket_bytes(bucket)] = json.dumps(
                self._cache[bucket], ensure_ascii=False, separators=(",", ":")
            ).encode()
        self._dirty.clear()
        self._cache.clear()
        return written


class FaustTables:
    """Adapts Faust tables to :class:`pipeline.worker.processor.Tables`.

    Both tables hold raw bytes (no Faust model codecs): an hourly key is stored under
    :func:`~pipeline.domain.usage.hourly_key_bytes`, its aggregate as
    ``b"usage_us,busy_us,samples,version,late_us"``. Faust routes a table write to the
    changelog partition of the *current event*; in a batch we set that event explicitly, so
    each write lands in the partition its message came from.
    """

    def __init__(self, seen: Any, hourly: Any) -> None:
        from faust.streams import _current_event

        self._current = _current_event
        self._seen = BucketedSeen(seen, self._bind)
        self.seen: MutableMapping[DedupeKey, int] = self._seen
        self._hourly = hourly

    def _bind(self, msg: Message) -> None:
        if msg.handle is not None:  # outside a Faust stream (tests) there is no event
            self._current.set(weakref.ref(msg.handle))

    def bind(self, msg: Message) -> None:
        self._bind(msg)
        self._seen.current = msg

    def flush(self) -> int:
        return self._seen.flush()

    def load(self, key: HourlyKey) -> Agg:
        raw = self._hourly.get(hourly_key_bytes(key))
        return Agg.from_list([int(x) for x in raw.split(b",")] if raw else None)

    def store(self, key: HourlyKey, agg: Agg) -> None:
        self._hourly[hourly_key_bytes(key)] = ",".join(map(str, agg.to_list())).encode()
