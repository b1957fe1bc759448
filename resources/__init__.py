"""I/O adapters: one small interface each, with local and (where it differs) AWS versions."""
