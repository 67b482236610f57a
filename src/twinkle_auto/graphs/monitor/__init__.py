"""The monitor graph."""
