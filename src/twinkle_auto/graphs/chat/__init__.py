"""The chat agent graph."""
