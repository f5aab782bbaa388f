"""Packaging entry point.

Metadata lives in setup.cfg. This file exists only so that the C++ sources under ops/ and
tflite_delegate/ travel with the package: they are compiled on first use (see dc_keras/_native.py),
which keeps `pip install -e .` fast and lets the build pick up the TensorFlow that is installed.
"""
from setuptools import setup

setup()
