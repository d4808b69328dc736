"""Apache Pinot clients: the controller (schemas, table configs, segment status) and the
broker (SQL queries).

Shapes checked against Pinot's PinotSchemaRestletResource / PinotTableRestletResource:
  POST /schemas?override=true&force=false (JSON body; 409 if it exists and override=false)
  GET/DELETE /schemas/{name}         (404 when absent; DELETE 409 while a table uses it)
  POST /tables, PUT /tables/{name}   (409 on create when the table exists)
  GET /tables/{name}?type=realtime   -> {"REALTIME": {...}} or {} (200!) when absent
  DELETE /tables/{name}?type=realtime (404 when absent)
and PinotLogicalTableResource (Pinot 1.5):
  POST /logicalTables                (409 when a logical table, or a table of that raw name, exists)
  PUT/GET/DELETE /logicalTables/{name} (404 when absent; PUT validates the body first: 400)
Controller errors look like {"code": 404, "error": "..."}.
Why broker "exceptions" need their own mapping: the broker answers HTTP 200 even when a
query failed, listing [{"errorCode", "message"}]; some codes mean "not ready yet" (a freshly
created table has no broker resource for a few seconds) and are transient.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import requests

from cdc.clients.http import HttpClient, scrub
from cdc.core.errors import PermanentRemoteError, TransientRemoteError, UnreachableError

CONTROLLER = "Pinot controller"
BROKER = "Pinot broker"

# QueryErrorCode values that mean "try again shortly" rather than "your query is wrong":
# server shutting down / out of capacity / table or segment missing on server, scheduling
# and execution timeouts, segment unavailable, broker timeout, broker resource or instance
# missing, request send failure, server not responding, too many requests, cancellation,
# remote cluster unavailable.
TRANSIENT_QUERY_ERRORS = frozenset({210, 211, 230, 235, 240, 245, 250, 305, 400, 410, 420, 425, 427, 429,
                                    503, 510})

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class PinotControllerClient:
    """Pinot controller REST (local stack: http://127.0.0.1:9000)."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, session: requests.Session | None = None,
                 **http_kw: Any) -> None:
        self.http = HttpClient(CONTROLLER, base_url, timeout=timeout, session=session, **http_kw)

    @staticmethod
    def _n(name: str) -> str:
        return quote(name, safe="")

    def health(self) -> bool:
        """GET /health answers "OK" (200) when the controller is ready; 503 raises Transient."""
        resp = self.http.request("GET", "/health")
        return resp is not None and resp.text.strip().upper().startswith("OK")

    # -- schemas ---------------------------------------------------------------------------

    def add_schema(self, schema: dict[str, Any], override: bool = True, force: bool = False) -> dict[str, Any]:
        """POST /schemas. override=True makes it create-or-update (backward-compatible
        changes only unless force=True)."""
        params = {"override": str(override).lower(), "force": str(force).lower()}
        return self.http.post("/schemas", json=schema, params=params) or {}

    def get_schema(self, name: str) -> dict[str, Any] | None:
        return self.http.get(f"/schemas/{self._n(name)}", allow_404=True)

    def delete_schema(self, name: str) -> bool:
        """False when it did not exist. A schema still used by a table answers 409 (Permanent)."""
        return self.http.request("DELETE", f"/schemas/{self._n(name)}", allow_404=True) is not None

    # -- tables ----------------------------------------------------------------------------

    def add_table(self, config: dict[str, Any]) -> dict[str, Any]:
        """POST /tables. 409 (PermanentRemoteError) when it exists: use update_table then."""
        return self.http.post("/tables", json=config) or {}

    def update_table(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """PUT /tables/{name}: the raw name (no _REALTIME suffix); 404 if absent."""
        return self.http.put(f"/tables/{self._n(name)}", json=config) or {}

    def get_table(self, name: str, type: str = "REALTIME") -> dict[str, Any] | None:
        """The table config of that type, or None (Pinot answers 200 {} for a missing table)."""
        body = self.http.get(f"/tables/{self._n(name)}", params={"type": type.lower()}, allow_404=True)
        if not isinstance(body, dict):
            return None
        return body.get(type.upper()) or None

    def list_tables(self) -> list[str]:
        return list((self.http.get("/tables") or {}).get("tables") or [])

    def delete_table(self, name: str, type: str = "realtime", retention: str | None = None) -> bool:
        """DELETE /tables/{name}?type=. False when it did not exist. retention="0d" drops
        segments immediately instead of keeping them in the deleted-segments area."""
        params = {"type": type.lower()}
        if retention is not None:
            params["retention"] = retention
        return self.http.request("DELETE", f"/tables/{self._n(name)}", params=params, allow_404=True) is not None

    # -- logical tables (Pinot 1.5) -------------------------------------------------------------

    def put_logical_table(self, config: dict[str, Any]) -> dict[str, Any]:
        """Create or update the logical table config["tableName"]: PUT /logicalTables/{name},
        and POST /logicalTables when that answers 404 (absent). PUT first because a POST's 409
        cannot tell "logical table exists" from "a physical table has that name"; this way the
        409 reaches the caller only for the second. Answers {"status", "unrecognizedProperties"}."""
        resp = self.http.request("PUT", f"/logicalTables/{self._n(config['tableName'])}", json=config,
                                 allow_404=True)
        if resp is None:
            return self.http.post("/logicalTables", json=config) or {}
        try:
            body = resp.json()
        except ValueError:          # an empty or non-JSON success body
            return {}
        return body if isinstance(body, dict) else {}

    def get_logical_table(self, name: str) -> dict[str, Any] | None:
        """The logical table config, or None when absent (404)."""
        body = self.http.get(f"/logicalTables/{self._n(name)}", allow_404=True)
        return body if isinstance(body, dict) else None

    def delete_logical_table(self, name: str) -> bool:
        """DELETE /logicalTables/{name}. False when it did not exist. The physical tables stay
        (a table referenced by a logical table cannot be deleted: 409, so delete this first)."""
        return self.http.request("DELETE", f"/logicalTables/{self._n(name)}", allow_404=True) is not None

    def reload_table(self, name: str, type: str = "REALTIME") -> dict[str, Any]:
        """POST /segments/{t}/reload?type=: servers reload the table's segments against the
        current schema (a column added to the schema then reads its default, NULL)."""
        return self.http.post(f"/segments/{self._n(name)}/reload", params={"type": type.upper()}) or {}

    def consuming_segments_info(self, table: str) -> dict[str, Any]:
        """GET /tables/{t}/consumingSegmentsInfo: per consuming segment, each server's
        consumerState, lastConsumedTimestamp and partition offsets (lag checks)."""
        return self.http.get(f"/tables/{self._n(table)}/consumingSegmentsInfo") or {}

    def table_size(self, table: str) -> dict[str, Any] | None:
        """GET /tables/{t}/size (reportedSizeInBytes, estimatedSizeInBytes, ...), None if absent."""
        return self.http.get(f"/tables/{self._n(table)}/size", allow_404=True)

    def ideal_state(self, table: str, type: str = "REALTIME") -> dict[str, Any] | None:
        """GET /tables/{t}/idealstate?tableType=: {"REALTIME": {segment: {server: state}}}."""
        body = self.http.get(f"/tables/{self._n(table)}/idealstate", params={"tableType": type.lower()},
                             allow_404=True)
        if not isinstance(body, dict):
            return None
        return body.get(type.upper(), body) or None


class PinotBrokerClient:
    """Pinot broker SQL endpoint (local stack: http://127.0.0.1:8099)."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, session: requests.Session | None = None,
                 **http_kw: Any) -> None:
        self.http = HttpClient(BROKER, base_url, timeout=timeout, session=session, **http_kw)

    def query(self, sql: str, options: dict[str, Any] | None = None) -> tuple[list[str], list[list[Any]]]:
        """POST /query/sql {"sql"} -> (column names, rows). Broker-side "exceptions" raise."""
        body: dict[str, Any] = {"sql": sql}
        if options:
            body["queryOptions"] = ";".join(f"{k}={v}" for k, v in options.items())
        resp = self.http.post("/query/sql", json=body) or {}
        exceptions = resp.get("exceptions") or []
        if exceptions:
            codes = {e.get("errorCode") for e in exceptions if isinstance(e, dict)}
            text = scrub("; ".join(f"[{e.get('errorCode')}] {str(e.get('message', '')).strip()}"
                                   for e in exceptions if isinstance(e, dict)) or str(exceptions))
            cls = TransientRemoteError if codes and codes <= TRANSIENT_QUERY_ERRORS else PermanentRemoteError
            raise cls(self.http.label, "query failed", body=text)
        table = resp.get("resultTable") or {}
        columns = list((table.get("dataSchema") or {}).get("columnNames") or [])
        return columns, [list(r) for r in table.get("rows") or []]

    def count(self, table: str) -> int:
        """SELECT COUNT(*): for upsert tables this counts the latest version of each key."""
        if not _TABLE_NAME.match(table):
            raise ValueError(f"not a Pinot table name: {table!r}")
        _, rows = self.query(f'SELECT COUNT(*) FROM "{table}"')
        return int(rows[0][0]) if rows else 0


def query_dbapi(broker_host: str, port: int, sql: str, scheme: str = "http") -> tuple[list[str], list[tuple]]:
    """Same query through pinotdb's DB-API driver (for callers that want cursor semantics).

    pinotdb speaks httpx, not requests, so its failures are mapped here: httpx transport
    errors -> UnreachableError, DatabaseError (Pinot's exceptions text) -> PermanentRemoteError.
    """
    import httpx  # pinotdb's own dependency
    from pinotdb import connect  # local import: only this helper needs the driver
    from pinotdb.exceptions import DatabaseError, Error

    label = f"{BROKER} at {scheme}://{broker_host}:{port}"
    try:
        conn = connect(host=broker_host, port=port, path="/query/sql", scheme=scheme)
        try:
            cur = conn.cursor()
            cur.execute(sql)
            cols = [d[0] for d in cur.description or []]
            return cols, list(cur.fetchall())
        finally:
            conn.close()
    except httpx.TransportError as e:
        raise UnreachableError(label, f"cannot query ({type(e).__name__})",
                               hint="Is the Pinot broker running? Try `cdc stack status`.") from e
    except (DatabaseError, Error) as e:
        raise PermanentRemoteError(label, "query failed", body=scrub(str(e))) from e
