"""Import the modules that define the built-in transforms, so that they register themselves.

`transforms.registry` imports this module on first use; add a line here for a new module.
"""

from transforms import colour, edges, frequency, shuffle  # noqa: F401

__all__ = ["colour", "edges", "frequency", "shuffle"]
from transforms import hog  # noqa: E402, F401, I001  (HOG visualisation)
from transforms import sift  # noqa: E402, F401, I001  (SIFT rich keypoints)
from transforms import colour_hist  # noqa: E402, F401, I001  (colour histograms: image and vector forms)
