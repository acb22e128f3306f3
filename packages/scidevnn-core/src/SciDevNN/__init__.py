"""The course's original interface, kept as a thin layer over SciDevNN's core.

``SciDevNN.SDmodules`` (Linear, Softmax, Sigmoid, MSE, CrossEntropy and the plugins' course
classes), ``SciDevNN.SDoptim`` (GradientDescend, Adam) and ``SciDevNN.SDbase`` (the base
classes plugins subclass for their own course classes).
"""

from SciDevNN import SDbase, SDmodules, SDoptim

__all__ = ["SDbase", "SDmodules", "SDoptim"]
