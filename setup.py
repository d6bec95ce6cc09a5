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
    # jax 0.10 and numpy 2.4 need Python 3.11.
    python_requires=">=3.11",
    # Lower bounds are the versions the test suite runs with; older ones are untested.
    # Hard floors below them: jax.sharding.AxisType (ccrec/parallel.py) exists from jax
    # 0.5.3 on, and flax 0.12.8 itself needs jax >= 0.10.
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        # 0.11.36: the newest that the export extra's jax2onnx 0.17.1 accepts (the checkpoint
        # tests pass on it); the suite runs on 0.12.8.
        "orbax-checkpoint>=0.11.36",
        "numpy>=2.4",
        "absl-py>=2.5.1",
        "ml-collections>=1.1.0",
    ],
    extras_require={
        # pytest-xdist: the README runs the test files in 2 processes (CPU XLA compiles
        # are single-threaded and dominate the suite's time). pyink and ruff (configured in
        # pyproject.toml, run by .ci/run) are pinned: another version may format differently.
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            "matplotlib>=3.8",
            "pyink==26.5.1",
            "ruff==0.17.6",
        ],
        "notebooks": ["matplotlib>=3.8", "jupyter"],
        # launch/export.py --format=litert|onnx (ccrec/serving/convert.py): converters and
        # their runtimes, pinned to the versions the export is verified with (docs/export.md).
        "export": [
            "litert-converter==0.5.0",
            "ai-edge-litert==2.3.0",
            "jax2onnx==0.17.1",
            "onnxruntime==1.32.0",
            "onnx==1.23.2",
        ],
    },
)
