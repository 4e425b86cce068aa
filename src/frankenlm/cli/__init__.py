"""The ``frankenlm`` command line: parses arguments, calls the library, draws progress and tables.

The only part of frankenlm that prints or uses rich; every refusal is one line and exit status 2.
"""
