"""Prometheus metrics. One `Metrics` per runner, on its own registry (tests stay isolated).

Names are `tierflow_<noun>_<unit>` with stable labels: `job`, `status`, `connection`, `kind`,
`direction`. The alerting rules and the dashboard under `contrib/` are written against them.
Prometheus keeps its own `job` target label and so renames tierflow's `job` to `exported_job`
(unless the scrape sets `honor_labels`); the rules and the dashboard assume the rename.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["OUTCOMES", "Metrics"]

#: The statuses a window run ends in (`tierflow_window_runs_total`'s `status` label).
OUTCOMES = ("succeeded", "failed", "abandoned", "skipped")

_QUERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.window_runs = Counter(
            "tierflow_window_runs", "Windows run, by outcome.", ["job", "status"], registry=r
        )
        self.window_run_duration = Histogram(
            "tierflow_window_run_duration_seconds",
            "Time to run one query (a window or a coalesced batch), claim to record.",
            ["job"],
            buckets=_QUERY_BUCKETS,
            registry=r,
        )
        self.watermark_lag = Gauge(
            "tierflow_watermark_lag_seconds",
            "Now minus the job's watermark.",
            ["job"],
            registry=r,
        )
        self.windows_pending = Gauge(
            "tierflow_windows_pending", "Due windows not yet done.", ["job"], registry=r
        )
        self.windows_rechecked = Counter(
            "tierflow_windows_rechecked",
            "Windows re-aggregated because late data changed their source.",
            ["job"],
            registry=r,
        )
        self.query_retries = Counter(
            "tierflow_query_retries", "Engine calls retried.", ["connection"], registry=r
        )
        self.circuit_state = Gauge(
            "tierflow_circuit_state",
            "The connection's circuit: 0 closed, 1 open, 2 half-open (probing).",
            ["connection"],
            registry=r,
        )
        self.windows_parked = Gauge(
            "tierflow_windows_parked",
            "Windows that failed max_window_attempts times and wait for `tierflow retry`.",
            ["job"],
            registry=r,
        )
        self.windows_at_risk = Gauge(
            "tierflow_windows_at_risk",
            "Windows not yet done whose source data expires within the tier's expiry margin.",
            ["job"],
            registry=r,
        )
        self.query_duration = Histogram(
            "tierflow_query_duration_seconds",
            "Engine call latency, by kind (execute, query, ping).",
            ["connection", "kind"],
            buckets=_QUERY_BUCKETS,
            registry=r,
        )
        self.payload_bytes = Counter(
            "tierflow_payload_bytes",
            "Bytes sent to and received from servers.",
            ["connection", "direction"],
            registry=r,
        )
        self.window_last_success = Gauge(
            "tierflow_window_last_success_timestamp_seconds",
            "When a window (or a coalesced batch) of the job last succeeded, in Unix seconds.",
            ["job"],
            registry=r,
        )
        self.job_window = Gauge(
            "tierflow_job_window_seconds",
            "The length of the job's current window (its `every`; a cron schedule's may vary).",
            ["job"],
            registry=r,
        )
        self.job_offset = Gauge(
            "tierflow_job_offset_seconds",
            "How long after a window closes the job runs it (its `offset`).",
            ["job"],
            registry=r,
        )
        self.ready = Gauge(
            "tierflow_ready",
            "1 when the state store and every connection answered the daemon's last readiness "
            "check (each /readyz and each /metrics scrape), else 0.",
            registry=r,
        )
        # As Prometheus names its own (prometheus_config_last_reload_*).
        self.config_reloads = Counter(
            "tierflow_config_reloads",
            "Config reloads asked for by SIGHUP, by result (success, failure: the running "
            "config was kept).",
            ["result"],
            registry=r,
        )
        for result in ("success", "failure"):
            self.config_reloads.labels(result)
        self.config_last_reload_successful = Gauge(
            "tierflow_config_last_reload_successful",
            "1 when the last config reload succeeded (or none was asked for), 0 when it failed.",
            registry=r,
        )
        self.config_last_reload_successful.set(1)
        self.config_last_reload_success = Gauge(
            "tierflow_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded (at start, then each successful reload), in Unix "
            "seconds.",
            registry=r,
        )

    def declare_job(self, job: str) -> None:
        """Make the job's counters exist at zero: a counter that first appears at 1
        hides its first increase from `rate()` and `increase()`."""
        for outcome in OUTCOMES:
            self.window_runs.labels(job, outcome)
        self.windows_rechecked.labels(job)

    def forget_job(self, job: str) -> None:
        """Drop the job's series (a reload removed the job): its gauges would stay frozen, and
        the time since its last success would grow for ever, as if it had stopped working."""
        for metric in (
            self.window_run_duration,
            self.watermark_lag,
            self.windows_pending,
            self.windows_rechecked,
            self.windows_parked,
            self.windows_at_risk,
            self.window_last_success,
            self.job_window,
            self.job_offset,
        ):
            metric.remove(job)
        for outcome in OUTCOMES:
            self.window_runs.remove(job, outcome)

    def forget_connection(self, connection: str) -> None:
        """Drop the connection's series (a reload removed it): a circuit gauge frozen at open
        would page for ever about a server tierflow no longer talks to."""
        self.query_retries.remove(connection)
        self.circuit_state.remove(connection)
        labelled: tuple[tuple[Histogram | Counter, tuple[str, str]], ...] = (
            (self.query_duration, ("connection", "kind")),
            (self.payload_bytes, ("connection", "direction")),
        )
        for metric, names in labelled:
            shown = {
                tuple(sample.labels[name] for name in names)
                for family in metric.collect()
                for sample in family.samples
                if sample.labels.get("connection") == connection
            }
            for labels in shown:
                metric.remove(*labels)

    def declare_connection(self, connection: str) -> None:
        """Make the connection's retry counter exist at zero (see `declare_job`)."""
        self.query_retries.labels(connection)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
