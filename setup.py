"""Packaging for keras-adp: activation-density driven pruning in training for Keras 3."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="keras-adp",
    version="0.1.0",
    description=(
        "Activation Density driven Pruning in training (arXiv 2002.02949) "
        "for Keras 3: physically smaller models, not masks."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_adp", "keras_adp.*"]),
    package_data={"keras_adp": ["data_files/*"]},
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "numpy",
        "ai-edge-litert",
        "matplotlib",
        "tensorflow-datasets",
    ],
    extras_require={
        "dev": ["pytest>=7", "hypothesis>=6"],
        "tfmot": ["tensorflow-model-optimization>=0.8", "tf-keras"],
        # Tests on keras-hub backbones (built from config, no download).
        "hub": ["keras-hub>=0.32"],
        # ONNX export (keras_adp.onnx_export): Keras' exporter converts with
        # tf2onnx on TensorFlow (>=1.17: 1.16 pins protobuf 3.20, which
        # TensorFlow 2.21 cannot use); parity and latency run in ONNX Runtime.
        # Floors: releases built for NumPy 2. Tested: tf2onnx 1.17.0,
        # onnx 1.23.2, onnxruntime 1.32.0 (1.23.2 is the last for Python 3.10).
        "onnx": ["tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20"],
        # The JAX backend (KERAS_BACKEND=jax). Tested: jax/jaxlib 0.10.2 (CPU
        # wheels from PyPI, ~90 MB download).
        "jax": ["jax>=0.4.30"],
        # The PyTorch backend (KERAS_BACKEND=torch). Tested: torch 2.13.0
        # (CPU) and 2.14.1; PyPI's Linux wheel is the CUDA build (~3 GB).
        "torch": ["torch>=2.1"],
    },
    entry_points={"console_scripts": ["keras-adp=keras_adp.cli:main"]},
)
