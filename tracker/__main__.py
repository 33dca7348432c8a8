"""``python -m tracker`` is the ``pipetrack`` command."""

from tracker.cli import run

run()
