"""The jobstream application: the CLI and process wiring over streams/, handlers/, projections/.

This package sits on top of the three layers (it may import all of them); the
layers never import it.
"""
