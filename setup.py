"""conf/ sits at the top of the repository; a built wheel ships it as the package data of `c3exp.conf`."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["c3exp", "c3exp.*"]) + ["c3exp.conf"],
    package_dir={"c3exp.conf": "conf"},
    package_data={"c3exp.conf": ["*.yaml", "**/*.yaml"]},
)
