"""ccrec: compositional-code session recommenders with bidirectional distillation.

Importing ccrec runs nothing. Layers, top first (docs/DESIGN.md, "Layers"): workflow
and benchmarks; serving and train; evaluation and models; parallel + checkpoint, ops
and data; atomic, config, console and item_layout.
"""

__version__ = "0.1.0"
