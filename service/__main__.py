"""`python -m service`: start a worker, exactly as `flowctl worker` does.

The same options (`--help`), settings and exit codes; nothing else lives here.
"""

from service.cli import worker_main

if __name__ == "__main__":
    worker_main()
