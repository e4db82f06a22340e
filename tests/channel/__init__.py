"""Channel tests: local semantics, the same table across processes, select, tasklets, failures."""
