"""Hand-written device kernels (Pallas) for hot spots XLA does not fuse well."""
