"""Installable package for TATS-style long video generation (VQGAN + GPT)."""

from setuptools import find_packages, setup

setup(
    name="tats",
    version="0.1.0",
    description="Long video generation with a time-agnostic 3D VQGAN and a time-sensitive transformer",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["tats", "tats.*"]),
    include_package_data=True,
    package_data={"tats": ["assets/*", "gpt/*.gz", "gpt/*.txt"]},
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "pytorch-lightning>=2.2",
        "einops>=0.6",
        "h5py>=3.8",
        "imageio>=2.28",
        "imageio-ffmpeg>=0.4.8",
        "av>=11",
        "ftfy>=6.1",
        "regex>=2022.1",
        "tqdm>=4.60",
        "lpips>=0.1.4",
        "numpy>=1.23",
        "pillow>=9.0",
        "tensorboard>=2.10",
        "pyyaml>=6.0",
        "matplotlib>=3.5",
    ],
    extras_require={
        "test": ["pytest>=7", "scipy>=1.9", "ruff>=0.4"],
    },
)
