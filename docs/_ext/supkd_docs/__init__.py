"""supkd's own Sphinx extension: pages generated from the code at build time.

- ``.. supkd-losses::`` (:mod:`.losses`): every loss in ``supkd.losses.LOSSES`` (and
  ``SupConLoss``) with its equation, arguments and defaults, properties and source;
- ``.. supkd-models::`` (:mod:`.models`): the model registry's names and families;
- ``.. supkd-config::`` (:mod:`.config`): every section and field of a run config, the
  task sections included, with type, default, bound and one line of meaning read from the
  dataclass definitions (:mod:`.fields`);
- a docstring guard (:mod:`.docstrings`) for the API reference.

Nothing here restates the code: a loss, model, task or config field registered when the
site is built (also by a plugin named in ``SUPKD_PLUGINS``) appears on its page.
"""

from __future__ import annotations

from typing import Any

from supkd_docs import api, config, docstrings, losses, models, tables


def _load_plugins(app: Any) -> None:
    # The same plugins a supkd command would import (entry points, SUPKD_PLUGINS).
    import supkd.train.tasks  # noqa: F401  (registers the tasks, whose sections the config page lists)
    from supkd.utils.plugins import load_plugins

    load_plugins()


def setup(app: Any) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")  # the loss sections and the docstring guard use it
    app.connect("builder-inited", _load_plugins)
    app.add_directive("supkd-losses", losses.LossesDirective)
    app.add_directive("supkd-models", models.ModelsDirective)
    app.add_directive("supkd-config", config.ConfigDirective)
    app.add_directive("supkd-datasets", models.DatasetsDirective)
    app.add_directive("supkd-api", api.ApiDirective)
    app.add_directive("supkd-tables", tables.TablesDirective)
    docstrings.setup(app)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
