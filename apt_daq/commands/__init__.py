"""One module per ``apt-daq`` subcommand; each has ``register(subparsers)``."""
