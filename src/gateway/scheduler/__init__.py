"""Scheduling: a bounded admission queue per model and the batching workers that drain it."""

from gateway.scheduler.queue import AdmissionQueue, WorkItem
from gateway.scheduler.worker import BatchObserver, ModelScheduler

__all__ = ["AdmissionQueue", "BatchObserver", "ModelScheduler", "WorkItem"]
