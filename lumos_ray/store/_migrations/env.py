"""Alembic environment for the run store, run in-process by ``lumos_ray.store._migrate``.

There is no alembic.ini: the store builds the Config in code and hands over the
connection it already holds (inside the transaction that also holds the migration
lock), so a migration never opens a second connection or reads a config file.
"""

from __future__ import annotations

from alembic import context

from lumos_ray.store._migrate import VERSION_TABLE
from lumos_ray.store._schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "The lumos_ray store migrations run through RunStore / lumos_ray.store.upgrade(), "
        "which pass their own connection; the alembic command line is not supported."
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite cannot ALTER most things: batch mode rebuilds tables
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
