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
    },
    entry_points={"console_scripts": ["keras-adp=keras_adp.cli:main"]},
)
