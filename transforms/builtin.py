"""Import the modules that define the built-in transforms, so that they register themselves.

`transforms.registry` imports this module on first use; add a line here for a new module.
"""

from transforms import colour, edges, frequency, shuffle  # noqa: F401

__all__ = ["colour", "edges", "frequency", "shuffle"]
