"""`InMemoryFlowStore` and `InMemoryScheduleStore`: manifests, switches and crons."""

import heapq
from dataclasses import replace
from datetime import datetime

from service.adapters.memory.copies import copied_mapping
from service.engine.model import FlowId
from service.engine.records import FlowRecord, Schedule


class InMemoryFlowStore:
    def __init__(self) -> None:
        self._flows: dict[FlowId, FlowRecord] = {}

    async def save(self, record: FlowRecord) -> FlowRecord:
        stored = replace(record, manifest=copied_mapping(record.manifest))
        if (old := self._flows.get(record.flow_id)) is not None:
            stored = replace(stored, enabled=old.enabled)
        self._flows[record.flow_id] = stored
        return stored

    async def get(self, flow_id: FlowId) -> FlowRecord | None:
        return self._flows.get(flow_id)

    async def all(self) -> list[FlowRecord]:
        return sorted(self._flows.values(), key=lambda flow: flow.flow_id)

    async def set_enabled(self, flow_id: FlowId, *, enabled: bool) -> bool:
        if (flow := self._flows.get(flow_id)) is None:
            return False
        self._flows[flow_id] = replace(flow, enabled=enabled)
        return True


class InMemoryScheduleStore:
    def __init__(self) -> None:
        self._schedules: dict[str, Schedule] = {}

    async def sync(self, schedule: Schedule) -> Schedule:
        old = self._schedules.get(schedule.job_id)
        if old is None:
            stored = schedule
        else:
            # A new manifest cron moves the next fire, unless an operator paused the
            # schedule or overrode its cron: their choice outlives a deploy.
            moved = old.cron != schedule.cron and not old.paused
            stored = replace(
                old,
                flow_id=schedule.flow_id,
                trigger_key=schedule.trigger_key,
                cron=schedule.cron,
                next_fire_at=(
                    schedule.next_fire_at
                    if moved and old.cron_override is None
                    else old.next_fire_at
                ),
            )
        self._schedules[schedule.job_id] = stored
        return stored

    async def get(self, job_id: str) -> Schedule | None:
        return self._schedules.get(job_id)

    async def all(self) -> list[Schedule]:
        return sorted(self._schedules.values(), key=lambda schedule: schedule.job_id)

    async def due(self, now: datetime, *, limit: int) -> list[Schedule]:
        due = [
            (schedule.next_fire_at, schedule.job_id, schedule)
            for schedule in self._schedules.values()
            if not schedule.paused
            and schedule.next_fire_at is not None
            and schedule.next_fire_at <= now
        ]
        return [schedule for _, _, schedule in heapq.nsmallest(limit, due)]

    async def advance(
        self, job_id: str, *, fired_at: datetime, next_fire_at: datetime
    ) -> bool:
        schedule = self._schedules.get(job_id)
        if schedule is None or schedule.next_fire_at != fired_at:
            return False
        self._schedules[job_id] = replace(schedule, next_fire_at=next_fire_at)
        return True

    async def update(
        self,
        job_id: str,
        *,
        paused: bool,
        cron_override: str | None,
        next_fire_at: datetime | None,
    ) -> Schedule | None:
        if (schedule := self._schedules.get(job_id)) is None:
            return None
        updated = replace(
            schedule,
            paused=paused,
            cron_override=cron_override,
            next_fire_at=next_fire_at,
        )
        self._schedules[job_id] = updated
        return updated
