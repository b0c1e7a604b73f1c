"""Command-line interface: one module per command, all registered on the Typer app in ``cnnmrf.cli.app``."""
