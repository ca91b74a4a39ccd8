"""Kafka source: Debezium change events through a kafka-python consumer group.

Auto-commit is off: offsets are committed by `ack`, after the batch's database
transaction has committed, so a crash replays the batch (harmless: every write
re-reads the source) and never skips it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from kafka import KafkaConsumer
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata, TopicPartition

from core.settings import Settings
from indexer.debezium import decode_record
from indexer.events import Batch

log = logging.getLogger(__name__)

# --once: how long to wait for the group to assign partitions before calling it drained.
_ASSIGN_WAIT_S = 60.0


class KafkaSource:
    kind = "kafka"

    def __init__(self, settings: Settings, url: str | None = None) -> None:
        self.settings = settings
        self.url = url
        self.drained = False
        self.ignored = 0
        self._consumer: KafkaConsumer | None = None
        self._opened_at = 0.0

    def open(self, stop: threading.Event, *, wait: bool = True) -> None:
        s = self.settings
        self._consumer = KafkaConsumer(
            *s.topics,
            bootstrap_servers=[b.strip() for b in (s.kafka_bootstrap_servers or "").split(",")],
            group_id=s.kafka_group_id,
            client_id="patient-search-indexer",
            enable_auto_commit=False,
            auto_offset_reset=s.kafka_auto_offset_reset,
            max_poll_records=s.batch_size,
            max_poll_interval_ms=s.kafka_max_poll_interval_ms,
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
        )
        self._opened_at = time.monotonic()
        log.info("kafka consumer started", extra={"topics": len(s.topics)})

    def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):  # after a broker failure: nothing to save
                self._consumer.close(autocommit=False)
        self._consumer = None

    @property
    def consumer(self) -> KafkaConsumer:
        assert self._consumer is not None, "source not open"
        return self._consumer

    def needs_initial_sync(self) -> bool:
        """A gap in the stream means re-checking everyone, said in the log.

        Debezium's snapshot ('r' events) is the initial load of a new, complete
        topic. But a committed offset older than the partition's first retained
        record skipped what retention deleted, and a new consumer group on a
        projection that already holds patients would start wherever
        auto_offset_reset says, missing or replaying an unknown stretch.
        """
        partitions = self._partitions()
        if not partitions:
            return False
        first = self.consumer.beginning_offsets(partitions)
        ends = self.consumer.end_offsets(partitions)
        for tp in partitions:
            committed = self.consumer.committed(tp)
            if committed is not None and committed < first.get(tp, 0):
                log.warning(
                    "committed offset fell out of retention; re-checking every patient",
                    extra={"topic": tp.topic, "partition": tp.partition},
                )
                return True
            if committed is None and ends.get(tp, 0) > 0 and self._projection_has_rows():
                log.warning(
                    "new consumer group on an existing projection; re-checking every patient",
                    extra={"group": self.settings.kafka_group_id},
                )
                return True
        return False

    def _partitions(self) -> list[TopicPartition]:
        return [
            TopicPartition(topic, p)
            for topic in self.settings.topics
            for p in self.consumer.partitions_for_topic(topic) or ()
        ]

    def _projection_has_rows(self) -> bool:
        if self.url is None:
            return False
        with psycopg.connect(self.url) as conn:
            return conn.execute(
                "select exists (select 1 from patient_search.patients)"
            ).fetchone() == (True,)

    def keepalive(self) -> None:
        """Long work between polls (a truncate's resync): poll with our partitions paused,
        so the group does not evict us and hand the batch (and its truncate) to a replay."""
        assigned = self.consumer.assignment()
        if not assigned:
            return
        self.consumer.pause(*assigned)
        try:
            self.consumer.poll(timeout_ms=200)  # 0 may return before the group is polled
        finally:
            self.consumer.resume(*assigned)

    def mark_synced(self) -> None:
        return None

    def prepare_for_rebuild(self) -> None:
        return None  # the consumer group's committed offsets stay where they are

    def mark_rebuilt(self, conn: Any) -> None:
        return None

    def record_checkpoint(self, conn: Any, batch: Batch) -> None:
        return None  # the consumer group's committed offsets are the checkpoint

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """One batch, closed by count or by batch_timeout_ms."""
        deadline = time.monotonic() + self.settings.batch_timeout_ms / 1000
        batch = Batch()
        offsets: dict[TopicPartition, int] = {}
        empty_poll = False
        while batch.events < batch_size:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            polled = self.consumer.poll(
                timeout_ms=remaining_ms, max_records=batch_size - batch.events
            )
            if not polled:
                empty_poll = True
                break
            for tp, records in polled.items():
                for rec in records:
                    batch.events += 1
                    offsets[tp] = rec.offset + 1
                    decoded = decode_record(
                        rec.topic,
                        rec.partition,
                        rec.offset,
                        rec.key,
                        rec.value,
                        schema=self.settings.source_schema,
                    )
                    if decoded.change is not None:
                        batch.changes.append(decoded.change)
                        if decoded.change.commit_ts is not None:
                            batch.commit_ts.append(decoded.change.commit_ts)
                    elif decoded.dead is not None:
                        batch.dead.append(decoded.dead)
                    else:
                        self.ignored += 1
                    batch.position = f"{rec.topic}:{rec.partition}:{rec.offset}"
        self.drained = empty_poll and self._caught_up()
        if batch.events:
            batch.ack = offsets
            yield batch

    def _caught_up(self) -> bool:
        """Every partition of our topics consumed to its end, by us or committed by the group.

        Partitions still held by a member that died are not ours until the
        group evicts it (session timeout): --once waits for them too.
        """
        assigned = self.consumer.assignment()
        if not assigned:
            return time.monotonic() - self._opened_at > _ASSIGN_WAIT_S
        partitions = self._partitions()
        ends = self.consumer.end_offsets(partitions)
        for tp in partitions:
            done = self.consumer.position(tp) if tp in assigned else self.consumer.committed(tp)
            if (done or 0) < ends.get(tp, 0):
                return False
        return True

    def ack(self, batch: Batch) -> None:
        offsets: dict[TopicPartition, int] = batch.ack or {}
        if not offsets:
            return
        try:
            self.consumer.commit(
                offsets={tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
            )
        except CommitFailedError:
            # A rebalance took the partitions: the batch is written, the new owner replays it.
            log.warning("offset commit failed after rebalance; batch will be replayed")

    def heartbeat(self) -> bool:
        return False  # the group coordinator heartbeats on its own thread

    def lag(self) -> dict[str, float]:
        assigned = self.consumer.assignment()
        if not assigned:
            return {"consumer_lag": 0.0}
        ends = self.consumer.end_offsets(list(assigned))
        behind = sum(max(0, ends.get(tp, 0) - self.consumer.position(tp)) for tp in assigned)
        return {"consumer_lag": float(behind)}
