"""How the tuning runs change the pipeline: through the harness, never by editing templates.

A tuning figure is only worth having if the baseline it is compared with ran the shipped
templates, so the overrides are applied to the running mirror and undone after:

* `set_connector` PUTs the source connector's current config with keys added, changed or
  (value None) removed.
* `set_flink` cancels the freshness mirror's Flink job and resubmits its rendered SQL with
  Kafka sink options and `SET` statements overridden.

Each waits, via a probe, until the mirror delivers again before the next run measures it.
"""

from __future__ import annotations

import time

from cdc.postgres import catalog
from cdc.core import names
from cdc.mapping import render
from bench.harness import Bench, ts_us
from bench.probes import ProbeWatcher


def set_connector(b: Bench, overrides: dict[str, str | None]) -> None:
    name = names.connector_name("default")
    cfg = dict(b.ctx.connect.get_config(name))
    for k, v in overrides.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    b.ctx.connect.put_config(name, cfg)
    time.sleep(3)
    b.ctx.connect.wait_running(name, timeout=120)
    _settle(b)


def set_flink(b: Bench, sink: dict[str, str], sets: dict[str, str]) -> str:
    """Cancel the mirror's job and resubmit its rendered SQL with sink options / SET
    statements overridden (the template itself is not changed)."""
    rec = b.ctx.registry.get_mirror(b.mirror)
    spec = rec.spec
    with b.pg() as conn:
        info = catalog.introspect(conn, spec.schema_name, spec.table_name)
    stmts = render.render_flink_sql(spec, info, kafka_bootstrap=b.s.kafka_bootstrap, change_topic=b.change,
                                    flat_topic=b.flat, group_id=names.flink_group(spec.name))
    opts = {"sink.delivery-guarantee": "at-least-once", **sink}
    new = []
    for st in stmts:
        if "'sink.delivery-guarantee' = 'at-least-once'" in st:
            st = st.replace("'sink.delivery-guarantee' = 'at-least-once'",
                            ",\n  ".join(f"'{k}' = '{v}'" for k, v in opts.items()))
        for k, v in sets.items():
            if st.startswith(f"SET '{k}'"):
                st = f"SET '{k}' = '{v}'"
        new.append(st)
    for k, v in sets.items():
        if not any(x.startswith(f"SET '{k}'") for x in new):
            new.insert(0, f"SET '{k}' = '{v}'")
    b.ctx.jobmanager.cancel(rec.flink_job_id)
    deadline = time.monotonic() + 60
    while b.ctx.jobmanager.job_state(rec.flink_job_id) not in ("CANCELED", "FAILED", "FINISHED", None):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    job = b.ctx.gateway.submit_job(new, {"pipeline.name": f"cdc-mirror-{spec.name}"})
    b.ctx.registry.update_mirror(spec.name, flink_job_id=job)
    _settle(b)
    return job


def _settle(b: Bench) -> None:
    w = ProbeWatcher(b.s.kafka_bootstrap, b.flat)     # before the probe: it may arrive at once
    time.sleep(0.5)
    _, ts = b.lg.probe()
    seen = w.wait_for(ts_us(ts), 120)
    w.close()
    if seen is None:
        raise RuntimeError("the mirror did not deliver a probe within 120 s after a config change")
    time.sleep(2)
