"""The HTTP API (app.py), its bearer tokens (auth.py), its errors (problems.py), its codec server
for the Temporal UI (codec_server.py), and the Python client that calls it (client.py)."""
