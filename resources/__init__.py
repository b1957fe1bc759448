"""I/O adapters. Each is one small interface with a local and (where it differs) an AWS implementation."""
