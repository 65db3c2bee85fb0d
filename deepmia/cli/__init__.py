"""The ``deepmia`` command line. Each command group lives in its own module; ``main`` wires them together."""
