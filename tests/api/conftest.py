"""API fixtures: an app on SQLite in tmp_path, a recording enqueue, a broker that needs no server."""

from tests.support import api_fixtures

# The API test app's fixtures: an app on SQLite in tmp_path with a recording enqueue.
migrated_db, settings, enqueue = api_fixtures.migrated_db, api_fixtures.settings, api_fixtures.enqueue
app, client = api_fixtures.app, api_fixtures.client
npz_dataset, gap_model = api_fixtures.npz_dataset, api_fixtures.gap_model
