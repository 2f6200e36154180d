"""Process wiring: which ERP connectors the settings turn on, built from the settings."""

from __future__ import annotations

from core.settings import Settings
from erp_connectors.sync import Connector

SOURCES = ("files", "odoo", "business_central", "sap")


class SourceConfigError(ValueError):
    """A source is half configured, or asked for but not configured at all."""


def _required(settings: Settings, source: str, names: tuple[str, ...]) -> None:
    missing = [f"OEMR_{n.upper()}" for n in names if getattr(settings, n) in (None, "")]
    if missing:
        raise SourceConfigError(f"{source} is configured but {', '.join(missing)} not set")


def configured_sources(settings: Settings) -> list[str]:
    """The sources whose address is set, in sync order."""
    on = {"files": settings.erp_files_dir, "odoo": settings.erp_odoo_url,
          "business_central": settings.erp_bc_api_url, "sap": settings.erp_sap_url}
    return [s for s in SOURCES if on[s]]


def connectors(settings: Settings, only: list[str] | None = None) -> list[Connector]:
    """The connectors of the configured sources (or of ``only``, each of which must be)."""
    configured = configured_sources(settings)
    if only:
        unknown = [s for s in only if s not in SOURCES]
        if unknown:
            raise SourceConfigError(f"unknown source(s) {', '.join(unknown)};"
                                    f" known: {', '.join(SOURCES)}")
        off = [s for s in only if s not in configured]
        if off:
            raise SourceConfigError(f"source(s) {', '.join(off)} not configured (docs/erp-*.md)")
    chosen = [s for s in configured if not only or s in only]
    return [_build(settings, source) for source in chosen]


def _build(settings: Settings, source: str) -> Connector:
    # Imported here: a deployment with one ERP does not load the other three.
    if source == "files":
        from erp_connectors.files import FilesConnector

        assert settings.erp_files_dir is not None
        return FilesConnector(settings.erp_files_dir)
    if source == "odoo":
        from erp_connectors.odoo import OdooConnector

        _required(settings, source, ("erp_odoo_url", "erp_odoo_db", "erp_odoo_login",
                                     "erp_odoo_api_key"))
        assert settings.erp_odoo_url and settings.erp_odoo_db and settings.erp_odoo_login
        assert settings.erp_odoo_api_key is not None
        return OdooConnector(settings.erp_odoo_url, settings.erp_odoo_db,
                             settings.erp_odoo_login,
                             settings.erp_odoo_api_key.get_secret_value())
    if source == "business_central":
        from erp_connectors.business_central import BusinessCentralConnector

        _required(settings, source, ("erp_bc_api_url", "erp_bc_tenant", "erp_bc_company_id",
                                     "erp_bc_client_id", "erp_bc_client_secret"))
        assert settings.erp_bc_api_url and settings.erp_bc_tenant
        assert settings.erp_bc_company_id and settings.erp_bc_client_id
        assert settings.erp_bc_client_secret is not None
        return BusinessCentralConnector(
            settings.erp_bc_api_url, settings.erp_bc_tenant, settings.erp_bc_environment,
            settings.erp_bc_company_id, settings.erp_bc_client_id,
            settings.erp_bc_client_secret.get_secret_value(),
            token_url=settings.erp_bc_token_url, local_currency=settings.erp_bc_local_currency)
    from erp_connectors.sap import SapConnector

    _required(settings, source, ("erp_sap_url", "erp_sap_user", "erp_sap_password"))
    assert settings.erp_sap_url and settings.erp_sap_user
    assert settings.erp_sap_password is not None
    return SapConnector(settings.erp_sap_url, settings.erp_sap_user,
                        settings.erp_sap_password.get_secret_value(),
                        timezone=settings.erp_sap_timezone)
