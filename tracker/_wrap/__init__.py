"""``pipetrack run``'s machinery: the child process, its output streams and its outcome."""
