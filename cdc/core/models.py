"""Typed descriptions shared by every layer.

TableInfo is what the catalog observed in Postgres; MirrorSpec is what the user asked
for; Source is one Postgres database (one Debezium connector, one replication slot).
The render functions turn (Source, TableInfo, MirrorSpec) into the three artifacts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ColumnKind = Literal["base", "enum", "array", "domain", "composite", "other"]


class Column(BaseModel):
    name: str                      # exact Postgres identifier (case preserved, unquoted)
    type_name: str                 # format_type(), e.g. "numeric(12,2)", "text[]", "character varying(20)"
    base_type: str                 # type name without modifiers, resolved through domains: "numeric", "_int4"
    kind: ColumnKind = "base"
    element_type: str | None = None  # for arrays: element base type, e.g. "int4", "text"
    precision: int | None = None   # numeric precision / varchar length / time precision
    scale: int | None = None       # numeric scale
    nullable: bool = True
    identity: bool = False         # serial or GENERATED ... AS IDENTITY
    toastable: bool = False        # storage is extended/external: value may arrive as "unchanged TOAST"
    position: int = 0              # attnum


class TableInfo(BaseModel):
    schema_name: str
    table_name: str
    columns: list[Column]
    primary_key: list[str] = Field(default_factory=list)   # in key order
    replica_identity: Literal["default", "full", "index", "nothing"] = "default"
    oid: int | None = None
    # A partitioned table (mirrored through its root): the oids of its leaf partitions as
    # last seen (cdc.mirrors.partitions follows them). None: an ordinary table.
    partition_oids: list[int] | None = None

    @property
    def qualified(self) -> str:
        """schema.table as Debezium's table.include.list and topic names spell it."""
        return f"{self.schema_name}.{self.table_name}"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class Source(BaseModel):
    """One Postgres database. The DSN is stored without its password (see secrets).

    The TLS fields repeat the DSN's libpq settings for the Debezium connector (which cannot
    read a libpq DSN); they are file paths, never file contents. None means "not in the
    DSN": libpq's and pgjdbc's defaults then apply (sslmode prefer)."""

    name: str
    dsn: str                                  # password stripped
    database: str = "postgres"
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    has_password: bool = False
    sslmode: SslMode | None = None
    sslrootcert: str | None = None            # absolute path, or "system" (the platform's trusted roots)
    sslcert: str | None = None                # client certificate (absolute path)
    sslkey: str | None = None                 # client private key (absolute path)
    # A publication created and maintained by the DBA (least privilege, README "Managed
    # Postgres"): cdc and Debezium never create, alter or drop it. None: cdc's own filtered
    # publication, which Debezium creates and updates (needs table ownership).
    publication: str | None = None


MaskMethod = Literal["hash", "redact"]
PinotIndex = Literal["inverted", "range", "json", "text", "no_dictionary"]


class MirrorRules(BaseModel):
    """Per-mirror column rules and transforms (cdc apply files, `mirror add` flags).

    Column names are Postgres column names (exact, case preserved). Empty rules mean
    "every column, unchanged, every row" (what every mirror did before rules existed)."""

    model_config = {"extra": "forbid"}

    include_columns: list[str] | None = None   # only these (plus the key, always kept)
    exclude_columns: list[str] = Field(default_factory=list)
    mask_columns: dict[str, MaskMethod] = Field(default_factory=dict)   # hash keeps joins, redact blanks
    row_filter: str | None = None              # SQL predicate over the row, valid in Flink SQL and Postgres
    computed_columns: dict[str, str] = Field(default_factory=dict)      # mirror column -> Flink SQL expression
    pinot_indexes: dict[str, list[PinotIndex]] = Field(default_factory=dict)  # column -> index kinds

    def is_empty(self) -> bool:
        return self == MirrorRules()


class MirrorSpec(BaseModel):
    """What the user asked for: mirror SCHEMA.TABLE of SOURCE under NAME."""

    name: str
    source: str = "default"
    schema_name: str
    table_name: str
    key_columns: list[str] | None = None      # --key override for tables without a primary key
    rules: MirrorRules = Field(default_factory=MirrorRules)
    # Not user input: the Flink planner's type of each rules.computed_columns expression, set
    # by cdc when it plans the mirror (cdc.mirrors.rules_check); the flat topic and the Pinot
    # schema are rendered from it.
    computed_types: dict[str, str] = Field(default_factory=dict)

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.table_name}"
