"""puller: a ridiculously simple, distributed Docker deployment daemon."""

__version__ = "0.1.0"
