"""The image queue on /metrics: jobs by outcome, images made, GPU time, job duration,
and (at scrape time) how many jobs wait and run. Image requests are also counted with
every other request (`aistack_requests_total`, operation `image`)."""

from __future__ import annotations

from aistack.core.models import canonical
from aistack.images.queue import ImageQueue
from aistack.observability.gateway_metrics import LATENCY_BUCKETS
from aistack.observability.metrics import Registry
from aistack.store.calendar import now_ms
from aistack.store.job_records import FileRecord, JobRecord


class ImageMetrics:
    def __init__(self, registry: Registry, queue: ImageQueue) -> None:
        self.queue = queue
        r = registry
        self.jobs = r.counter(
            "aistack_image_jobs_total",
            "Image jobs ended, by model, backend and status (succeeded, failed, cancelled).",
            ("model", "backend", "status"),
        )
        self.images = r.counter(
            "aistack_images_total", "Images made, by model, backend and app.",
            ("model", "backend", "app"),
        )  # fmt: skip
        self.gpu = r.counter(
            "aistack_image_gpu_seconds_total",
            "Seconds image backends spent running jobs, by model and backend.",
            ("model", "backend"),
        )
        self.duration = r.histogram(
            "aistack_image_job_duration_seconds",
            "Time from a job's arrival in the queue to its end, by model and backend.",
            ("model", "backend"),
            LATENCY_BUCKETS,
        )
        self.waiting = r.gauge(
            "aistack_image_queue_depth",
            "Image jobs waiting: in aistack's queue, or given to a backend not yet running them.",
        )  # fmt: skip
        self.running = r.gauge(
            "aistack_image_jobs_active", "Image jobs this replica runs now, by backend.",
            ("backend",),
        )  # fmt: skip
        r.collect_with(self._collect)
        queue.on_finished.append(self.ended)

    def ended(self, job: JobRecord, files: list[FileRecord]) -> None:
        model = canonical(job.model)
        self.jobs.inc((model, job.backend, job.state))
        if files:
            self.images.inc((model, job.backend, job.app), len(files))
        if job.gpu_ms:
            self.gpu.inc((model, job.backend), job.gpu_ms / 1000)
        self.duration.observe((model, job.backend), max(0, now_ms() - job.created_at) / 1000)

    def _collect(self) -> None:
        self.waiting.set((), self.queue.depth)
        self.running.clear()
        for b, n in self.queue.active.items():
            self.running.set((b,), n)
