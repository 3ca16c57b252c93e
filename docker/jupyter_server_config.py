"""JupyterLab in the lmbench image: port 8080 on the container's interfaces, notebooks in /data, the API at the root.

The UI needs Jupyter's token (printed in the log; set your own with ``-e JUPYTER_TOKEN=...``). The
API is also mounted at the root paths Jupyter does not use (``/api/generate``, ``/v1/...``,
``/health``, ...), guarded as ``lmbench serve`` guards it: Host and Origin checks, and the key of
``-e LMBENCH_API_KEY=...`` when one is given (see docs/docker.md).
"""

import os

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by Jupyter when it reads this file

c.ServerApp.ip = "0.0.0.0"  # inside the container; the host decides who reaches it (-p 127.0.0.1:8080:8080)
c.ServerApp.port = 8080
c.ServerApp.open_browser = False
c.ServerApp.root_dir = "/data/notebooks"
c.LabApp.default_url = "/lab/tree/quickstart.ipynb"  # the address in the log opens the quickstart notebook
c.LabApp.news_url = None  # offline: no news or update checks (nor their prompt: overrides.json)
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.LmbenchServer.root_routes = True
c.LmbenchServer.api_key = os.environ.get("LMBENCH_API_KEY") or None
