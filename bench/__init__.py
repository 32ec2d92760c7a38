# SPDX-License-Identifier: Apache-2.0
"""Benchmark harness for Clarens: ``/usr/bin/python3 -m bench`` (see bench/README.md).

Not part of the product or of its test suite.
"""
