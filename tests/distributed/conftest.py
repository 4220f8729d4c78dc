"""Distributed tests launch real gloo workers with torchrun; every test here is marked."""
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/distributed/" in str(item.fspath):
            item.add_marker(pytest.mark.distributed)
