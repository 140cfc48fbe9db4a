"""The model's bad-input error, in a module of its own so that catching it imports no torch
(the command line catches it around every subcommand, the bag and recording ones included)."""


class ModelFileError(RuntimeError):
    """A model directory that is missing, incomplete or does not match its description."""
