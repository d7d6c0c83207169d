"""Python functions and an actor that the Java tests call (found on the
driver's code search path: the test classes directory)."""

import numpy as np


def add(a, b):
    return a + b


def divide(a, b):
    return a / b


def echo(value):
    return value


def arange(n):
    return np.arange(n, dtype=np.int64)


class Counter:
    def __init__(self, start):
        self.value = start

    def increment(self, by=1):
        self.value += by
        return self.value
