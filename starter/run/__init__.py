"""Process runners: what serves the front doors (serve.py), the worker's health endpoint (health.py),
`keycard dev`'s whole stack (dev.py, with its demo AWS in demo_aws.py), the drift sweep's schedule
(drift.py). None imports the worker: it is handed to them."""
