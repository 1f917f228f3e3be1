"""Alembic environment: runs on the connection that ``Database.migrate`` passes in."""

from alembic import context

from papersift.store.schema import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs the alembic CLI directly
    from papersift.settings import load_settings
    from papersift.store.db import create_db_engine

    connection = create_db_engine(load_settings().db_url).connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
