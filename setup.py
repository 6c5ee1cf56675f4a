"""Worker package for Dataflow: ships the project's modules to the workers.

Beam builds an sdist of this file when a job is launched with `--setup_file=./setup.py` (the
job's launcher passes it by default on a remote runner); the workers install it next to the
packages of `--requirements_file` (by default `requirements-worker.txt`). Pure Python: nothing
to compile. See BUILD.md.
"""
import setuptools

setuptools.setup(
    name="ankh3-pretrain",
    version="0.1.0",
    packages=setuptools.find_packages(include=["pipelines", "pipelines.*", "tasks", "tasks.*", "models", "models.*"]),
    python_requires=">=3.11",
)
