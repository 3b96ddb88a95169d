"""The exit-status convention of every `hla-deploy` subcommand (README, "Exit status"):

    OK = 0                  success
    FAILURE = 1             a failure while running (a build, a backend, a write that failed midway)
    USAGE = 2               usage or bad input: arguments, files the user named, checkpoints
    MISSING_DEPENDENCY = 3  an optional dependency is missing (the message says what to install)
    INTERRUPTED = 130       Ctrl-C (SIGINT)

``UsageError`` (a ValueError) is the exception for exit 2 (hla_deploy.models.CheckpointError is
one); ``hla_deploy.extras.MissingDependencyError`` (an ImportError) the one for exit 3.
`hla_deploy.cli.main` maps an exception that escapes a subcommand's ``run`` to its status; any
other exception is 1. Torch-free, import-free: every module may use it.
"""
from __future__ import annotations

OK = 0
FAILURE = 1
USAGE = 2
MISSING_DEPENDENCY = 3
INTERRUPTED = 130


class UsageError(ValueError):
    """A bad argument or input (a file the user named, a checkpoint): exit status 2."""
