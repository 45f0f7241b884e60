"""Imported once by the trial forkserver, so each trial forks with its imports done.

Measured on a 6-step digits trial: torch._dynamo (imported by the optimizers) and
scikit-learn (the built-in datasets) took 11 of its 14 seconds when every trial imported them.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot
import sklearn.datasets  # noqa: F401
import torch
import torch._dynamo
import torch.optim  # noqa: F401

