"""The command line: argument parsing, output, and the one error boundary."""
