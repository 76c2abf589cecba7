"""``eprop-lava data speech``: registered by eprop_lava.cli through ``register``."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add ``data`` (with its ``speech`` subcommand) to the top-level subparsers."""
    from eprop_lava.tasks.speech.corpus import add_arguments, run_data_speech

    data = subparsers.add_parser("data", help="build data sets (the offline speech corpus)")
    sub = data.add_subparsers(dest="data_command", required=True)
    p = sub.add_parser("speech", help="synthesize the offline spoken corpus with eSpeak NG (once; reused)")
    add_arguments(p)
    p.set_defaults(func=run_data_speech)
