"""Reports for auditors, built from the audit trail that Temporal's histories hold (access.py),
and written as Markdown, CSV, JSON or printable HTML (render.py)."""
