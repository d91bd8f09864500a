"""An independent Python model of the hash encoding, and tiny grids, for the hash-grid tests."""

from recon.model.hashgrid import HashGridConfig

# Two levels: level 0 dense (scale 1, 2 vertices per axis, 8 entries), level 1 hashed
# (scale 3, 4^3 = 64 vertices > 2^5 = 32 entries).
TINY = HashGridConfig(n_levels=2, n_features_per_level=2, log2_hashmap_size=5,
                      base_resolution=2, per_level_scale=2.0)
