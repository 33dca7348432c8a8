"""The tracker at run time: the Tracker registry, the Run and Subtask objects scripts hold, the
observers seam, and what ends runs (exit, exceptions, signals, fork)."""
