"""STUB"""


class Optimizer:
    pass
