"""An identity provider is configured whole or not at all."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Settings

ISSUER = "https://login.example-oem.test/realms/service"
JWKS = "https://login.example-oem.test/realms/service/protocol/openid-connect/certs"


@pytest.mark.parametrize("given", [
    {"oidc_issuer": ISSUER, "oidc_jwks_url": JWKS},
    {"oidc_issuer": ISSUER, "oidc_audience": "oem-retention"},
    {"oidc_jwks_url": JWKS, "oidc_audience": "oem-retention"},
])
def test_a_partial_identity_provider_is_refused(given: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="OEMR_OIDC_AUDIENCE"):
        Settings(**given)  # type: ignore[arg-type]


def test_a_whole_one_or_none_is_taken() -> None:
    whole = Settings(oidc_issuer=ISSUER, oidc_jwks_url=JWKS, oidc_audience="oem-retention")
    assert whole.oidc_audience == "oem-retention"
    assert Settings().oidc_issuer is None
