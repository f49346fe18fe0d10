"""Scheduling: a bounded admission queue per model and the feeder that hands its rows to the decode loop."""

from gateway.scheduler.feeder import ModelScheduler
from gateway.scheduler.queue import AdmissionQueue, WorkItem

__all__ = ["AdmissionQueue", "ModelScheduler", "WorkItem"]
