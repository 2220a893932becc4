"""The command-line layer: commands that drive the whole compiler (``mlc.__main__`` parses
the arguments and calls them). Modules here may import any part of mlc; nothing in mlc
imports them."""
