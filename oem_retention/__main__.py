from oem_retention.cli import app

app()
