"""A gate a test's hook file waits on, so a test decides exactly when the hook finishes."""

import threading

gate = threading.Event()
