"""Settings of every oem-retention process, read once from the environment (prefix ``OEMR_``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Signs the API's own tokens in development only: the settings refuse it anywhere else.
DEVELOPMENT_SECRET = "development-only-this-key-is-not-a-secret"  # noqa: S105
DEFAULT_TENANT = "default"
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


class Settings(BaseSettings):
    """All configuration; read at process start and passed down, never read at import time."""

    # hide_input_in_errors: a refused value may be a secret, and the error is printed or logged.
    model_config = SettingsConfigDict(env_prefix="OEMR_", extra="ignore", frozen=True,
                                      hide_input_in_errors=True)

    # development: the demo's defaults are allowed; production: every secret must be set.
    environment: Literal["development", "production"] = "development"

    # A libpq connection string: URL (postgresql://...) or key=value form.
    database_url: str = "postgresql://postgres@127.0.0.1:55432/oemr"
    # A database per tenant (docs/tenancy.md): tenant name -> libpq connection string, as JSON
    # in OEMR_TENANT_DATABASES. Empty: one tenant, "default", in database_url.
    tenant_databases: dict[str, str] = Field(default_factory=dict)
    state_dir: Path = Path("/var/lib/oem-retention")
    db_pool_max: int = Field(default=8, ge=1)

    # Telemetry storage, sized for a reference fleet of 100,000 machines x 10 metrics / 10 s
    # (docs/storage.md explains the numbers).
    telemetry_chunk_interval: str = "1 hour"
    telemetry_compress_after: str = "2 hours"
    telemetry_retention: str = "90 days"

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 18830
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_keepalive: int = Field(default=30, ge=5)

    # Ingester.
    ingest_client_id: str = "oemr-ingest-1"
    # A shared-subscription group spreads load over several ingesters, but Mosquitto 2.0 does not
    # restore shared subscriptions after a restart (docs/mqtt.md): off unless asked for.
    ingest_share_group: str | None = None
    # Topic filter levels: which tenants (oem/<tenant>/...) and Sparkplug groups this ingester
    # takes; "+" is all.
    ingest_tenant_filter: str = "+"
    ingest_batch_size: int = Field(default=2000, ge=1, le=32000)
    ingest_linger_ms: int = Field(default=200, ge=1)
    # Batches written at once, each on its own connection: the database works on one while the
    # event loop receives and encodes the next.
    ingest_writers: int = Field(default=2, ge=1, le=8)
    ingest_max_payload_bytes: int = Field(default=256 * 1024, ge=64)
    ingest_max_clock_skew_s: int = Field(default=3600, ge=0)
    # Rows older than this (by the ingester's clock) when written mark their UTC day for the
    # rollup to recompute (rollup_late_days, migration 015). Rows on time are left to the
    # rollup's watermark refresh, which looks back 2 h: this plus ingest_max_clock_skew_s (a
    # machine clock ahead lets the watermark run ahead) must stay within that lookback.
    ingest_late_after_s: int = Field(default=3600, ge=1)
    ingest_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    # auto: the ingester's fast MQTT client (ingest/broker.py) when paho's internals are the
    # ones it was written against (checked at start), else stock paho, with a warning; off:
    # stock paho (CI runs the end-to-end ingest tests both ways).
    ingest_fast_path: Literal["auto", "off"] = "auto"
    sparkplug_host_id: str | None = "oemr"
    sparkplug_group_filter: str = "+"
    sparkplug_tenant: str = "default"
    sparkplug_rebirth_debounce_s: float = Field(default=5.0, ge=0)

    # Money is stored in its own currency and converted to this one for reporting.
    reporting_currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")

    # ERP sources: a source is on when its address is set (docs/erp-*.md).
    erp_files_dir: Path | None = None
    erp_odoo_url: str | None = None
    erp_odoo_db: str | None = None
    erp_odoo_login: str | None = None
    erp_odoo_api_key: SecretStr | None = None
    erp_bc_api_url: str | None = None  # https://api.businesscentral.dynamics.com
    erp_bc_token_url: str | None = None  # default: Microsoft Entra ID's for the tenant
    erp_bc_tenant: str | None = None
    erp_bc_environment: str = "production"
    erp_bc_company_id: str | None = None
    erp_bc_client_id: str | None = None
    erp_bc_client_secret: SecretStr | None = None
    # The company's local currency: BC leaves currencyCode empty on documents in it.
    erp_bc_local_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    erp_sap_url: str | None = None  # https://my000000-api.s4hana.cloud.sap
    erp_sap_user: str | None = None
    erp_sap_password: SecretStr | None = None
    # SAP hands contract start and end as instants; they are days in the system's time zone.
    erp_sap_timezone: str = "UTC"
    # How often `up` syncs every configured source (0: only by hand, `erp sync`).
    erp_sync_interval_minutes: int = Field(default=15, ge=0)

    # The API (docs/api.md).
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_workers: int = Field(default=1, ge=1, le=64)
    # The role the API logs in as, on each tenant's database: neither owner nor superuser, so
    # row-level security applies to it (docs/tenancy.md; the migrations create it).
    api_database_user: str = "oemr_api"
    api_database_password: SecretStr | None = None
    api_pool_max: int = Field(default=10, ge=1)
    # HMAC key of the API's bearer tokens (HS256).
    api_secret_key: SecretStr = SecretStr(DEVELOPMENT_SECRET)
    api_token_minutes: int = Field(default=60, ge=1, le=24 * 60)
    # An OEM's own identity provider (Entra ID, Keycloak): its tokens are accepted when the
    # issuer, its JWKS and the audience are set; the role and tenant are read from the named
    # claims (a dotted path for a nested one: Keycloak's realm_access.roles).
    oidc_issuer: str | None = None
    oidc_jwks_url: str | None = None
    oidc_audience: str | None = None
    oidc_role_claim: str = "roles"
    oidc_tenant_claim: str = "tenant"

    @model_validator(mode="after")
    def _tenant_names(self) -> Settings:
        for name in self.tenant_databases:
            if not TENANT_NAME.fullmatch(name):
                msg = (f"tenant name {name!r}: lower-case letters, digits and '-' only, "
                       "1 to 40 of them (it is part of API keys and URLs)")
                raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        # Without an audience every token the provider issues for any of its applications
        # would be accepted here.
        oidc = (self.oidc_issuer, self.oidc_jwks_url, self.oidc_audience)
        if any(oidc) and not all(oidc):
            msg = ("an identity provider needs OEMR_OIDC_ISSUER, OEMR_OIDC_JWKS_URL and "
                   "OEMR_OIDC_AUDIENCE (this API's client id at the provider) together")
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _no_default_secrets_outside_development(self) -> Settings:
        if self.environment != "development" and (
                self.api_secret_key.get_secret_value() == DEVELOPMENT_SECRET
                or len(self.api_secret_key.get_secret_value()) < 32):
            msg = ("OEMR_API_SECRET_KEY must be set to a random value of 32 characters or more "
                   "outside development (python3 -c 'import secrets; "
                   "print(secrets.token_urlsafe(48))')")
            raise ValueError(msg)
        return self

    def tenant_urls(self) -> dict[str, str]:
        """Every tenant's database, by tenant name."""
        return dict(self.tenant_databases) or {DEFAULT_TENANT: self.database_url}

    @property
    def receive_maximum(self) -> int:
        """MQTT 5 Receive Maximum: a batch per writer, plus one filling while they commit."""
        return min(65535, (self.ingest_writers + 1) * self.ingest_batch_size)
