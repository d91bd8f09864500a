"""Data in and out: run directories (run.toml + TIFF frames), the sensor model, volumes, meshes."""
