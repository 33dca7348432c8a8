"""The version of pipetrack (the distribution, the command and both packages): one place."""

__version__ = "0.1.0"
