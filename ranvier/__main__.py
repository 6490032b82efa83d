"""``python -m ranvier`` runs the ``ranvier`` command."""

from ranvier.cli import main

main()
