"""Flink session cluster (JobManager, TaskManager) and SQL Gateway. (work in progress)"""

from __future__ import annotations

from cdc.config import Settings
from cdc.stack.process import Service


def services(settings: Settings, progress) -> list[Service]:
    return []
