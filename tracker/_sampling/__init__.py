"""Resource sampling: one sampler for a process or a process tree, and the cadence at which a
run keeps its samples. Nothing here imports psutil until a sampler is made off Linux."""

from __future__ import annotations

from tracker._sampling._cadence import DEFAULT_TIERS, SampleCadence, SampleSchedule
from tracker._sampling._sampler import ResourceSample, ResourceSampler
from tracker._sampling._shared import SharedSampler
from tracker._sampling._sockets import DATABASE_PORTS, DatabaseEndpoints

__all__ = [
    "DATABASE_PORTS",
    "DEFAULT_TIERS",
    "DatabaseEndpoints",
    "ResourceSample",
    "ResourceSampler",
    "SampleCadence",
    "SampleSchedule",
    "SharedSampler",
]
