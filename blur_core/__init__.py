"""blur_core: BLUR bi-level LLM unlearning, the update rule and the training loop around it.

Importing the package has no side effects and does not import torch-heavy submodules
beyond what the public names need.
"""

__version__ = "0.1.0"
