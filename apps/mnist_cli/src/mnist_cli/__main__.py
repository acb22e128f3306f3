"""``python -m mnist_cli``: the same as the ``mnist-cli`` command."""

from mnist_cli.cli import app

app(prog_name="mnist-cli")
