"""conf/ sits at the top of the repository; a built wheel ships it as the package data of `c3exp.conf`."""
from setuptools import find_namespace_packages, find_packages, setup

setup(
    # hydra_plugins: Hydra takes a sweeper only from there (c3exp's Optuna sweeper)
    packages=find_packages(include=["c3exp", "c3exp.*"]) + find_namespace_packages(include=["hydra_plugins.*"]) + ["c3exp.conf"],
    package_dir={"c3exp.conf": "conf"},
    package_data={"c3exp.conf": ["*.yaml", "**/*.yaml"]},
)
