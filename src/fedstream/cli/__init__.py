"""The ``fedstream`` command line, a module per command:

- ``run`` (``cli/run.py``): a simulated run;
- ``server``, ``client``, ``tokens`` (``cli/deploy.py``): a deployment over gRPC;
- ``serve`` (``cli/serve.py``): real-time inference;
- ``data describe`` (``cli/data.py``) and ``runs list/show`` (``cli/runs.py``);
- ``cli/options.py``: the setting flags and config loading they share.

``cli/root.py`` holds the group and the table of commands; a command's module is imported
only when that command is used.
"""

from fedstream.cli.root import main

__all__ = ["main"]
