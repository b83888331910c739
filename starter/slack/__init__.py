"""The Slack app: `/access`, the request modal and the buttons, as thin Bolt listeners (app.py)."""
