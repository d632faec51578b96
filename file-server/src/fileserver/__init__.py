"""fileserver: publish a pool of text files with nginx, download them fast and prove every byte with SHA-256.

The contract between the parts is the ``SHA256SUMS`` file (``sha256sum -c`` format): the pool generator writes
it, nginx publishes it beside the files, and the client trusts nothing else.
"""

__version__ = "0.1.0"
