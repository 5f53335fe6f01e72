"""The shared vocabulary every layer above the models speaks: wire contracts, typed settings, metric names, the
declared topics and the local stack's state file. It imports no other layer of the project but ``triton_models``."""
