"""connection layer (see DESIGN.md)."""
