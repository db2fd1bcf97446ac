"""The project library: data, splits, networks, training, statistics, reports, artifacts, config."""
