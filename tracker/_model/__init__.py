"""The in-memory model of a run: its state and progress maths, the declared columns of the
canonical record, snapshots of it, and the checks and cleaning of what callers pass. No I/O."""
