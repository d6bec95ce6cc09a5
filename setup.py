"""ccrec: efficient on-device session-based recommendation in JAX/Flax."""

import setuptools

setuptools.setup(
    name="ccrec",
    version="0.1.0",
    description=(
        "Compositional-code compression with bidirectional self-supervised "
        "knowledge distillation for on-device session-based recommendation."
    ),
    packages=setuptools.find_packages(include=["ccrec", "ccrec.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.9",
        "numpy>=1.26",
        "absl-py>=2.1",
        "ml-collections>=0.1.1",
    ],
    extras_require={
        # pytest-xdist: the README runs the test files in 2 processes (CPU XLA compiles
        # are single-threaded and dominate the suite's time).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "nbclient>=0.10",
                 "nbformat>=5.10", "ipykernel>=6.29", "matplotlib>=3.8"],
        "notebooks": ["matplotlib>=3.8", "jupyter"],
        # launch/export.py --format=litert|onnx (ccrec/serving/convert.py): converters and
        # their runtimes, pinned to the versions the export is verified with (docs/export.md).
        "export": ["litert-converter==0.5.0", "ai-edge-litert==2.3.0", "jax2onnx==0.17.1",
                   "onnxruntime==1.32.0", "onnx==1.23.2"],
    },
)
