"""Request and response models of the REST API (cdc.api.app), and the text scrubbing it applies.

Why strict: everything a request carries ends up in SQL identifiers, Kafka topic names,
Flink job names or libpq connection strings. Rejecting bad input here (422 naming the field)
is what keeps a 5xx meaning "a remote system failed" and never "the input surprised us".
"""

from __future__ import annotations

import re
from dataclasses import asdict, is_dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, model_validator

from cdc.mirrors import service
from cdc.clients.http import scrub
from cdc.core.errors import CdcError
from cdc.core import names
from cdc.core.models import MirrorRules, TableInfo

SOURCE_NAME = r"^[a-z][a-z0-9_]{0,40}$"            # what service.add_source accepts
MIRROR_NAME = r"^[a-z0-9][a-z0-9_]{0,239}$"        # any registered mirror, also one named by older rules
NEW_MIRROR_NAME = "^" + names.MIRROR_NAME_RULE.pattern + "$"   # Pinot table name rules (cdc.core.names)
MAX_IDENT = 127
MAX_TOPIC = 249
_PASSWORD_ANYWHERE = re.compile(r"(?i)(://[^/\s:@]*:)[^\s@]*@")


def _clean_text(v: str) -> str:
    """No NUL bytes (libpq and C-strings truncate at them) and valid UTF-8 (a lone surrogate
    from JSON's \\ud800 cannot be sent to Postgres)."""
    if "\x00" in v:
        raise ValueError("must not contain NUL bytes")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid UTF-8 (no lone surrogates)") from None
    return v


def _ident(v: str) -> str:
    if not 1 <= len(v) <= MAX_IDENT:
        raise ValueError(f"must be 1..{MAX_IDENT} characters")
    return _clean_text(v)


Ident = Annotated[str, StringConstraints(min_length=1, max_length=MAX_IDENT), AfterValidator(_ident)]
SourceNameField = Annotated[str, StringConstraints(pattern=SOURCE_NAME, max_length=41)]
MirrorNameField = Annotated[str, StringConstraints(pattern=NEW_MIRROR_NAME, max_length=100)]


def scrub_text(text: str) -> str:
    """Remove credentials from text bound for a response body or a log line."""
    return scrub(_PASSWORD_ANYWHERE.sub(r"\1***@", text))


def to_jsonable(value: Any) -> Any:
    """Results of other modules' functions (ops, verify) as JSON, whatever they return."""
    from fastapi.encoders import jsonable_encoder
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    try:
        return jsonable_encoder(value)
    except Exception:  # an odd type must not turn a finished operation into a 500
        return str(value)


# -- requests ---------------------------------------------------------------------------------

def _split_table(qualified: str) -> tuple[str, str]:
    from cdc.cli.mirror import _split_table as split
    try:
        return split(qualified)
    except CdcError as exc:
        raise ValueError(exc.message) from None


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SourceNameField = Field(description="lowercase letters, digits and _; starts with a letter")
    dsn: Annotated[str, StringConstraints(min_length=1, max_length=2000), AfterValidator(_clean_text)] = Field(
        description="postgresql://USER[:PASSWORD]@HOST:PORT/DBNAME or key=value; the password is never echoed; "
                    "TLS settings (sslmode, sslrootcert, sslcert, sslkey: absolute paths) reach the connector too")
    publication: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] | None = Field(
        default=None, description="a publication the DBA created and maintains (least privilege): cdc never "
                                  "creates, alters or drops it; each mirrored table must be in it")

    @model_validator(mode="after")
    def _no_server_files(self) -> "SourceIn":
        # passfile/service make the server read ITS OWN files (the stack's password file,
        # say) and send what they hold to a host the caller chose: not over the API.
        from psycopg.conninfo import conninfo_to_dict
        try:
            parts = conninfo_to_dict(self.dsn)
        except Exception:
            return self    # unparsable: create_source reports it
        for key in ("passfile", "service", "servicefile"):
            if parts.get(key):
                raise ValueError(f"{key} is not accepted over the API (it names a file on the server); "
                                 "give the password in the DSN instead, or use `cdc source add` locally")
        return self

    def password(self) -> str | None:
        from cdc.postgres.catalog import _dsn_password
        try:
            return _dsn_password(self.dsn)
        except Exception:
            return None


class MirrorIn(BaseModel):
    """`table` is "schema.table" ("quoted" parts may contain dots; no schema = public), or
    the bare table name when `schema` is given."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    table: Annotated[str, StringConstraints(min_length=1, max_length=2 * MAX_IDENT + 5),
                     AfterValidator(_clean_text)] = Field(examples=["public.orders"])
    schema_name: Ident | None = Field(default=None, alias="schema")
    source: SourceNameField = names.DEFAULT_SOURCE
    name: MirrorNameField | None = Field(default=None, description="default: derived from source, schema, table")
    key: list[Ident] | None = Field(default=None, min_length=1, max_length=32,
                                    description="key columns for a table without a primary key")
    replica_identity_full: bool = Field(default=False, description="with `key`: accept ALTER TABLE ... REPLICA "
                                        "IDENTITY FULL so UPDATE/DELETE events carry the old row")
    rules: MirrorRules | None = Field(default=None, description="column rules, as `cdc mirror add` --include, "
                                      "--exclude, --mask, --filter, --compute, --index (README: Column rules)")
    load: Literal["copy", "debezium"] | None = Field(default=None, description="how the existing rows are read: "
                                                     "parallel COPY into the flat topic, or Debezium's snapshot "
                                                     "(default: the server's CDC_INITIAL_LOAD)")
    _name: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _resolve(self) -> MirrorIn:
        if self.schema_name is None:
            self.schema_name, self.table = _split_table(self.table)
        for part in (self.schema_name, self.table):
            _ident(part)
        name = self.name or names.mirror_name(self.schema_name, self.table, self.source)
        if not names.MIRROR_NAME_RULE.fullmatch(name):
            raise ValueError(f"the derived mirror name {name[:60]!r}... is invalid or too long; pass `name`")
        if len(names.change_topic(self.source, self.schema_name, self.table)) > MAX_TOPIC:
            raise ValueError(f"schema + table names are too long for a Kafka topic (max {MAX_TOPIC} chars)")
        self._name = name
        return self

    def mirror_name(self) -> str:
        return self._name


# -- responses --------------------------------------------------------------------------------

class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body/query/path, then the field")
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer has this shape, request validation (422) included."""

    error: str = Field(description="error class, e.g. NotFoundError, UnreachableError, ValidationError")
    message: str
    hint: str | None = Field(default=None, description="what to do about it")
    system: str | None = Field(default=None, description="the remote system that failed, for 502/503")
    detail: list[FieldError] | None = Field(default=None, description="the invalid fields, for validation errors")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    status: Literal["up", "down", "disabled"]
    detail: str | None = None


class Ready(BaseModel):
    ready: bool
    down: list[str] = Field(description="the systems that did not answer")
    checks: dict[str, Check]


class Removed(BaseModel):
    name: str
    removed: bool = True
    drop_data: bool | None = None


class Plan(BaseModel):
    name: str
    source: str
    table: str
    connector_name: str
    connector: dict[str, Any] = Field(description="Debezium connector config (passwords are file references)")
    flink_sql: list[str]
    pinot_schema: dict[str, Any]
    pinot_table: dict[str, Any]
    change_topic: str
    flat_topic: str
    table_info: TableInfo
    notes: list[str] = []


class MirrorStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    state: str
    source: str
    table: str
    flat_topic: str
    connector: dict[str, Any] | None = None
    flink_job: dict[str, Any] | None = None
    pinot: dict[str, Any] | None = None


class OpResult(BaseModel):
    name: str
    action: str
    result: Any = Field(default=None, description="what the operation returned")
