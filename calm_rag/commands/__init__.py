"""One module per ``calm-rag`` command: each has ``register(subparsers)``."""
