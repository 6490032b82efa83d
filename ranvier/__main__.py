"""``python -m ranvier`` runs the ``ranvier`` command."""

from ranvier.entry import main

main()
