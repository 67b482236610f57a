"""twinkle-auto: control, watch and repair ML fine-tuning runs from a terminal chat."""

__version__ = "0.1.0"
