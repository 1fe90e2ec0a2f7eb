"""What a plugin implements or receives: protocols, configuration, data, models, weights,
images, checkpoints, precision, data checks. Imports only reinv_bench.contract."""
