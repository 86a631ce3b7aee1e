"""Subcommands of the ``tdecomp`` console script (see :mod:`tdecomp.cli`)."""
