"""Front doors: each turns a person's action into a workflow call."""
