"""The HTTP API of oem-retention (docs/api.md): a face on analytics and core; nothing imports it."""
