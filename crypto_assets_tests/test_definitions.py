import dagster as dg

from crypto_assets.definitions import defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert "raw_ticks" in keys
    assert defs.resolve_job_def("ingest_job") is not None
