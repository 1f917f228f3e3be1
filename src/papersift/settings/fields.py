"""The Settings class: every setting papersift has, its type, default, description and
validation (the README's table is generated from these fields). How values are found is in
:mod:`papersift.settings.loading`."""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from papersift.home import file_key

ENV_PREFIX = "PAPERSIFT_"
CONFIG_NAME = "papersift.toml"
CONFIG_ENV = "PAPERSIFT_CONFIG"  # the config file, for processes started by `serve`

# The TOML file the object being built reads (set by load_settings for one construction).
_config_file: ContextVar[Path | None] = ContextVar("papersift_config_file", default=None)


class SettingsError(ValueError):
    """A setting has a value papersift cannot use; the message names it and says why."""


def _xdg_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "papersift"


def _default_cache() -> Path:
    return Path.home() / ".cache" / "papersift"


class Settings(BaseSettings):
    """Where data lives, how to reach the outside world, and how search is tuned."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
        frozen=False,
    )

    # -- where data lives -------------------------------------------------------------------
    home: Path = Field(
        default_factory=_xdg_home,
        description="Data folder: the SQLite database, indexes, keys "
        "(default `~/.local/share/papersift`; CLI `--home`).",
    )
    db: str = Field(
        default="",
        description="SQLAlchemy database URL, e.g. `postgresql://user@host/db` "
        "(default SQLite at `$PAPERSIFT_HOME/papersift.db`; CLI `--db`).",
    )
    cache: Path = Field(
        default_factory=_default_cache,
        description="Cache folder for derived models and evaluation embeddings "
        "(default `~/.cache/papersift`).",
    )

    # -- database reliability ---------------------------------------------------------------
    db_busy_timeout: float = Field(
        default=3.0,
        gt=0,
        description="Seconds a web request waits for a locked SQLite database, or for a pooled "
        "PostgreSQL connection, before answering 503 with Retry-After.",
    )
    db_connect_timeout: int = Field(
        default=5,
        gt=0,
        description="Seconds to wait for a PostgreSQL connection to open.",
    )
    db_statement_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds one web request's SQL statement may run on PostgreSQL "
        "(also the TCP user timeout of a connection that stops answering).",
    )
    manage_link_days: int = Field(
        default=30,
        gt=0,
        description="Days a subscriber's manage/unsubscribe link in a mail stays valid.",
    )

    # -- web and mail -----------------------------------------------------------------------
    base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Public URL of the web app, used in every link it or a mail makes.",
    )
    smtp_url: str = Field(
        default="smtp://127.0.0.1:25",
        description="`smtp://host:25`, `smtp://user:pass@host:587?starttls=1`, "
        "`smtps://user:pass@host:465`; options `timeout=S`, `insecure=1` (testing only); "
        "`none` (or empty): no SMTP, mail is kept in the outbox (`papersift mail outbox`).",
    )
    mail_from: str = Field(
        default="papersift <digest@localhost>",
        description="Sender of every mail, e.g. `papersift <digest@example.org>`.",
    )
    unsubscribe_mailto: str | None = Field(
        default=None,
        description="Address for `mailto:` unsubscribes, piped into "
        "`papersift subscribers unsubscribe-mail` (default: none, https only).",
    )
    smtp_rate: float = Field(
        default=10.0,
        ge=0,
        description="Mails per second a digest run sends at most (`0` = unlimited).",
    )
    digest_hour: int = Field(
        default=7,
        ge=0,
        le=23,
        description="Local hour after which `serve --digests` sends the day's digests.",
    )
    secret: str | None = Field(
        default=None,
        repr=False,
        description="Signing key for cookies, CSRF tokens and mail links "
        "(default: generated once into `$PAPERSIFT_HOME/secret.key`).",
    )
    admin_loopback: bool = Field(
        default=True,
        description="Admin pages (`/admin/outbox`) answer requests from 127.0.0.1/::1 "
        "(`0`: never; an admin sign-in will be the other way in).",
    )

    # -- web hardening ----------------------------------------------------------------------
    forwarded_allow_ips: str = Field(
        default="",
        description="Proxies whose `X-Forwarded-For`/`-Proto` are believed: comma-separated "
        "addresses or networks, e.g. `127.0.0.1` behind a local nginx; `*` any; empty "
        "(default): none, the client is the TCP peer.",
    )
    trusted_hosts: str = Field(
        default="",
        description="Host names the app answers for (comma-separated, `*.example.org`, `*` any); "
        "empty (default): the host of `base_url` plus localhost, 127.0.0.1, ::1 and testserver. "
        "Other `Host` headers get 400.",
    )
    cors_origins: str = Field(
        default="",
        description="Web origins whose pages may call the JSON API from a browser "
        "(comma-separated, e.g. `https://lab.example.org`; `*` any); empty (default): none.",
    )
    json_logs: bool | None = Field(
        default=None,
        description="Log one JSON object per line (`1`) or plain text (`0`); default: JSON "
        "when standard error is not a terminal.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level of log lines written."
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a request's complete headers (`serve`).",
    )
    keepalive_timeout: int = Field(
        default=5,
        gt=0,
        description="Seconds an idle keep-alive connection stays open (`serve`).",
    )
    body_timeout: float = Field(
        default=20.0,
        gt=0,
        description="Seconds the app waits for the next piece of a request body before 408.",
    )
    max_connections: int = Field(
        default=1000,
        gt=0,
        description="Open connections per worker of `serve`; more are answered 503 and closed.",
    )
    max_connections_per_ip: int = Field(
        default=64,
        gt=0,
        description="Open connections per worker from one client address (an IPv6 /64).",
    )
    votes_per_ip_paper: int = Field(
        default=5,
        gt=0,
        description="Upvotes one client address (an IPv6 /64) can give one paper per day.",
    )
    views_per_ip_paper: int = Field(
        default=5,
        gt=0,
        description="Views of one paper counted per client address (an IPv6 /64) per day.",
    )
    signup_mails_per_hour: int = Field(
        default=200,
        gt=0,
        description="Confirmation mails the sign-up form writes per hour at most, in all "
        "(one domain gets a quarter of it, one address with its `+tag` removed one per 10 min).",
    )

    # -- reader accounts --------------------------------------------------------------------
    signup_policy: Literal["closed", "open", "domains", "invite"] = Field(
        default="closed",
        description="Who may create an account by signing in: `closed` (only "
        "`papersift users add`), `open` (anyone), `domains` (addresses at "
        "`signup_domains`), `invite` (addresses given to `papersift users invite`).",
    )
    signup_domains: str = Field(
        default="",
        description="Comma-separated email domains that may sign up when `signup_policy` is "
        "`domains` (`lab.example.org,example.edu`).",
    )
    anonymous_votes: bool | None = Field(
        default=None,
        description="Whether visitors without an account can vote; unset: yes until the "
        "deployment has accounts (a user exists or `signup_policy` is not `closed`), then no.",
    )
    session_days: int = Field(
        default=30, gt=0, le=3650, description="Days a sign-in lasts on one browser."
    )
    comment_burst: int = Field(
        default=5, ge=1, le=1000, description="Comments an account may post at once."
    )
    comments_per_hour: int = Field(
        default=30,
        ge=1,
        le=100_000,
        description="Comments an account may post per hour after its burst (a stolen session "
        "or a script cannot flood a thread).",
    )
    co_saved_readers: int = Field(
        default=3,
        ge=0,
        description='Recommendations also use what other readers saved ("readers who saved '
        'these also saved") once this many readers have saved papers; `0` turns it off.',
    )

    # -- the daily job ----------------------------------------------------------------------
    daily_source: str = Field(
        default="",
        description="What `papersift daily` harvests: `oai:URL[#set]` (OAI-PMH, arXiv "
        "format) or `arxiv:QUERY` (the arXiv API); empty: no harvest.",
    )
    daily_max: int = Field(
        default=2000,
        gt=0,
        description="Most papers one daily arXiv API harvest fetches.",
    )
    arxiv_api_url: str = Field(
        default="https://export.arxiv.org/api/query",
        description="The arXiv API endpoint `daily_source = arxiv:...` queries.",
    )

    # -- background jobs --------------------------------------------------------------------
    queue: Literal["auto", "inprocess", "procrastinate"] = Field(
        default="auto",
        description="Where background jobs (mail, digests, indexing, the daily job) run: "
        "`procrastinate` (a PostgreSQL queue, run by `papersift worker`), `inprocess` (threads "
        "of the process that asked), `auto`: procrastinate on PostgreSQL, in process on SQLite.",
    )
    queue_daily_cron: str = Field(
        default="0 6 * * *",
        description="When `papersift worker` starts the daily job (cron, UTC); empty: never "
        "(a timer runs `papersift daily` instead).",
    )
    worker_concurrency: int = Field(
        default=2, gt=0, le=64, description="Jobs one `papersift worker` runs at once."
    )
    redis_url: str | None = Field(
        default=None,
        description="A Redis server (`redis://host:6379/0`) for rate limits and view "
        "de-duplication shared by every host; unset: they live in the database.",
    )
    snapshot_url: str | None = Field(
        default=None,
        description="Where index snapshots are published (`index --publish`) and followed "
        "(`serve`): a shared folder (`file:///srv/papersift-snapshots`) or a bucket "
        "(`s3://bucket/prefix`, needs `papersift[s3]`; credentials from the usual AWS_* "
        "variables). Unset: every host indexes for itself.",
    )
    snapshot_endpoint_url: str | None = Field(
        default=None,
        description="The S3 API endpoint for an S3-compatible store (MinIO, Ceph, "
        "`http://127.0.0.1:9000`); unset: AWS.",
    )
    snapshot_poll_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How often a `serve` host with `snapshot_url` looks for a newer snapshot.",
    )
    snapshot_download_rate: float = Field(
        default=0.0,
        ge=0,
        description="Cap on snapshot download speed in MB/s (0: no cap), so a follower "
        "never saturates its link while it serves.",
    )

    # -- the embedding model ----------------------------------------------------------------
    model_dir: str | None = Field(
        default=None,
        description="A sentence-transformers model exported to ONNX (folder with `model.onnx` "
        "or `onnx/model.onnx` and `tokenizer.json`); default: the bundled all-MiniLM-L6-v2.",
    )
    threads: int | None = Field(
        default=None,
        gt=0,
        description="Threads of the embedding model (default: the cores, at most 4).",
    )
    query_int8: bool = Field(
        default=True,
        description="Embed queries with an int8 copy of the model (`0` keeps them on float).",
    )
    document_int8: bool = Field(
        default=False,
        description="Embed documents on an int8 copy of the model: about twice the papers "
        "per second, vectors at cosine 0.995 with the float ones (stored under their own "
        "model id, so switching re-embeds every paper once).",
    )
    embed_cache: Path | None = Field(
        default=None,
        description="Folder of an embedding cache keyed by text (evaluation and benchmarks).",
    )
    embed_providers: str = Field(
        default="CPUExecutionProvider",
        description="onnxruntime execution providers for document embedding, in order of "
        "preference, comma-separated (e.g. `CUDAExecutionProvider,CPUExecutionProvider` on a "
        "GPU node); ones this onnxruntime build lacks are skipped with a warning.",
    )

    # -- the vector index -------------------------------------------------------------------
    vector_index: Literal["ivf", "hnsw"] = Field(
        default="ivf",
        description="Index of the vectors above `exact_limit` papers: `ivf` (faiss inverted "
        "lists of 8-bit codes; at a million papers the whole index built in 5 minutes and a "
        "vector search took 2.7 ms at recall@100 0.958) or `hnsw` (a usearch graph: 43 "
        "minutes and 8.5 ms at 0.936 there). Applies "
        "at the next rebuild (`papersift index --rebuild`).",
    )
    ivf_probe_share: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Share of the IVF clusters a query scans (and at least 50,000 papers' "
        "worth): higher finds "
        "more of the true nearest papers, more slowly; no rebuild needed.",
    )
    vector_dtype: Literal["bf16", "f16", "i8", "f32"] = Field(
        default="bf16",
        description="Storage type of the HNSW graph's vectors (`bf16`: searched 20-50 % "
        "faster than `f16` at the same recall where the CPU has AVX-512 BF16).",
    )
    hnsw_connectivity: int = Field(default=48, gt=0, description="HNSW graph connectivity.")
    hnsw_expansion_add: int = Field(
        default=300, gt=0, description="HNSW candidate list while building the graph."
    )
    hnsw_expansion_search: int = Field(
        default=768,
        gt=0,
        description="HNSW candidate list while searching (lower is faster; no rebuild needed).",
    )
    exact_limit: int = Field(
        default=20_000,
        gt=0,
        description="Up to this many papers vectors are searched exactly (numpy), above in "
        "the `vector_index`.",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")) or "://" == value[-3:]:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _networks(cls, value: str) -> str:
        import ipaddress

        items = [v.strip() for v in value.split(",") if v.strip()]
        for item in items:
            if item != "*":
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not an address or network") from None
        return ",".join(items)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        items = [v.strip().rstrip("/") for v in value.split(",") if v.strip()]
        for item in items:
            if item != "*" and not item.startswith(("http://", "https://")):
                raise ValueError(f"{item!r} is not an origin like https://host[:port]")
        return ",".join(items)

    @property
    def cors_origin_list(self) -> list[str]:
        """``cors_origins`` as a list (empty: no cross-origin calls)."""
        return [v for v in self.cors_origins.split(",") if v]

    @property
    def signup_domain_list(self) -> list[str]:
        """``signup_domains`` as lower-case domains, without a leading ``@``."""
        return [d.strip().lower().lstrip("@") for d in self.signup_domains.split(",") if d.strip()]

    @field_validator("json_logs", "anonymous_votes", mode="before")
    @classmethod
    def _blank_bool(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("trusted_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        return ",".join(v.strip().lower() for v in value.split(",") if v.strip())

    @field_validator("unsubscribe_mailto", "secret", "model_dir", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip() or None
            if value and not value.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("snapshot_url", mode="before")
    @classmethod
    def _snapshot_url(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().rstrip("/") or None
            if value and not value.startswith(("file://", "s3://")):
                raise ValueError("must be a file:// folder or an s3:// bucket URL")
        return value

    @field_validator("queue_daily_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        value = " ".join(value.split())
        if value and not croniter.is_valid(value):
            raise ValueError("must be a cron expression like '0 6 * * *' (or empty)")
        return value

    @field_validator("home", "cache", "embed_cache")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _default_db(self) -> Settings:
        if not self.db:
            self.db = f"sqlite:///{self.home / 'papersift.db'}"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = _config_file.get()
        if config is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
        return tuple(sources)

    # -- derived ----------------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        """The database URL (``db``), named as SQLAlchemy names it."""
        return self.db

    @property
    def index_dir(self) -> Path:
        """Derived search indexes: safe to delete, rebuilt from the database."""
        return self.home / "index"

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated (for tests and embedding code)."""
        data = self.model_dump()
        data.update(changes)
        token = _config_file.set(None)
        try:
            return Settings(**data)
        finally:
            _config_file.reset(token)

    def secret_key(self) -> str:
        """Key for signed cookies and email tokens; generated once per home if not set."""
        if self.secret:
            return self.secret
        return file_key(self.home / "secret.key")
