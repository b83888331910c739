"""Activities: side effects, one module per outside system."""
