"""ccrec: compositional-code session recommenders with bidirectional distillation.

Importing ccrec runs nothing; see the subpackages: data, models, ops, train,
evaluation, serving, plus checkpoint and parallel.
"""

__version__ = "0.1.0"
