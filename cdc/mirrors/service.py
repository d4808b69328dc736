"""The one place the CLI and the REST API call: sources and mirrors, add / remove / status.

The work lives in one module per concern; this module only gathers their public functions
so both faces (and the tests that stub them) see one surface:

    context.py    Context (a client per system), pinot_enabled
    sources.py    add / remove / get sources, their passwords
    lifecycle.py  plan / add / remove mirrors (nothing half-made on failure)
    status.py     mirror_status, query
"""

from __future__ import annotations

from cdc.core.names import DEFAULT_SOURCE, change_topic, connector_name, flat_topic
from cdc.mirrors.context import Context, context, pinot_enabled
from cdc.mirrors.lifecycle import (MirrorPlan, add_mirror, create_connector, delete_connector, get_mirror,
                                   plan_mirror, remove_mirror, render_connector_config, send_snapshot_signal,
                                   tables_of_source)
from cdc.mirrors.sources import (add_source, ensure_default_source, get_source, password_ref, remove_source,
                                 source_dsn, source_from_dsn)
from cdc.mirrors.status import answered_by, mirror_status, query, read_mirror

__all__ = ["DEFAULT_SOURCE", "Context", "MirrorPlan", "add_mirror", "add_source", "answered_by", "change_topic", "connector_name",
           "context", "create_connector", "delete_connector", "ensure_default_source", "flat_topic", "get_mirror",
           "get_source", "mirror_status", "password_ref", "pinot_enabled", "plan_mirror", "query", "read_mirror", "remove_mirror",
           "remove_source", "render_connector_config", "send_snapshot_signal", "source_dsn", "source_from_dsn",
           "tables_of_source"]
