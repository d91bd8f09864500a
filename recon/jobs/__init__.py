"""The operations of the command line as Python functions: each reads its inputs, runs, writes its outputs."""
