"""The app's tests run torch on one thread: in this process and in every mnist-cli they start.

mnist-cli uses one thread unless told otherwise, and these tests compare its results bit for
bit (resume equivalence, same seed same weights) with runs made in this process: both must add
up their sums in the same order, which depends on the thread count.
"""

import os

import torch

os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
