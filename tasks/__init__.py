"""One module per DAG step. Plain functions: validated config and input paths in, paths and metrics out."""
