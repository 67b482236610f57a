"""graphs layer (see DESIGN.md)."""
