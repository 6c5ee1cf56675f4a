"""Worker package for Dataflow: ships the project's modules to the workers.

Beam builds an sdist of this file when a job is launched with `--setup_file=./setup.py`; the
workers install it next to the packages in `--requirements_file`. See BUILD.md. Installing it
compiles `pipelines._example_codec` (the output record encoder) and `pipelines._fasta_scan` (the
FASTA record scanner), so workers need a C compiler and the Python headers;
`python3 setup.py build_ext --inplace` (or `make setup`) builds them locally.
"""
import setuptools

setuptools.setup(
    name="ankh3-pretrain",
    version="0.1.0",
    packages=setuptools.find_packages(include=["pipelines", "pipelines.*", "tasks", "tasks.*", "models", "models.*"]),
    ext_modules=[setuptools.Extension("pipelines._example_codec", ["pipelines/_example_codec.c"]),
                 setuptools.Extension("pipelines._fasta_scan", ["pipelines/_fasta_scan.c"])],
    python_requires=">=3.11",
)
