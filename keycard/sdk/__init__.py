"""SDK for users' hook files."""
