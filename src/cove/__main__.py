from cove.cli import app

app()
