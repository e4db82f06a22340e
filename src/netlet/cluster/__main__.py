"""``python -m netlet.cluster --join ADDR``: one worker process (see ``_worker``)."""

from netlet.cluster._worker_main import main

main()
