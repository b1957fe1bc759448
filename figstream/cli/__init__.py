"""The ``figstream`` command (``main``), one command group per module.

- ``main``: the parser and entry point; ``data``: ``generate`` and ``demo-data``;
- ``bus``: ``publish`` and ``produce``; ``dlq``: the dead-letter commands;
- ``migration``: ``migration status|advance|rollback``; ``args``: shared argument types.

The top of the core: may import every other package, and nothing imports it.
"""
